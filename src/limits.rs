//! Limits AWS puts on what kiln sends, shared by recipe validation (which refuses what cannot
//! fit) and the pipeline (which sizes what it sends to fit).

/// EC2 allows at most 50 tags on a resource (`TagLimitExceeded`).
pub const TAGS_PER_RESOURCE: usize = 50;

/// Systems Manager refuses a command whose document, with its parameters filled in, is larger
/// than 64 KB (`SendCommand` answers `MaxDocumentSizeExceeded`: "The size limit of a document is
/// 64 KB").
pub const SSM_DOCUMENT_MAX_BYTES: usize = 64 * 1024;

/// The most kiln puts in one command's `commands` parameter: the documented limit less room for
/// the `AWS-RunShellScript` document itself and its other parameters.
pub const SSM_COMMAND_BUDGET_BYTES: usize = SSM_DOCUMENT_MAX_BYTES - 4 * 1024;

/// Room kept for the wrapper kiln puts around a `run` script (shebang, build id, step name,
/// heredoc delimiters, exit code handling).
pub const RUN_WRAPPER_RESERVE_BYTES: usize = 1024;

/// The largest `run` script (after templates are rendered) a recipe may have.
pub const RUN_SCRIPT_MAX_BYTES: usize = SSM_COMMAND_BUDGET_BYTES - RUN_WRAPPER_RESERVE_BYTES;
