//! The command line: clap arguments in, a validated call into the library out, an exit code back.
//! clap types stop here; the pipeline never sees them.

mod events;
mod progress;
mod render;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueHint};

use std::sync::Arc;

use crate::aws::sdk::{ConnectOptions, Sdk};
use crate::aws::Cloud;
use crate::error::{exit, Error, Result};
use crate::pipeline::build::{BuildOptions, Interrupts, OnError};
use crate::pipeline::journal::CommandJournal;
use crate::pipeline::rollback::{Allowed, Target};
use crate::pipeline::{self, Context};
use crate::plan::Plan;
use crate::recipe::{load_plan, LoadOptions, SecretValues};
use progress::{Mode, Progress};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version = crate::LONG_VERSION,
    about = "Bake Amazon Machine Images from YAML recipes and roll them out through launch templates"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// AWS region (default: the standard chain: AWS_REGION, the profile...)
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
    /// AWS profile from the shared config files
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Send every AWS request to this endpoint (a local emulator); AWS_ENDPOINT_URL works too
    #[arg(long, global = true, value_name = "URL", value_hint = ValueHint::Url)]
    endpoint_url: Option<String>,
    /// Only warnings, errors and results
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail: every state change, a step's whole output at its end; -vv adds debug logs
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Plain timestamped lines instead of progress spinners (step output line by line as it
    /// is read), even on a terminal
    #[arg(long, global = true)]
    no_progress: bool,
    /// Where builds keep their journal, step logs and manifest
    #[arg(
        long,
        global = true,
        env = "KILN_STATE_DIR",
        default_value = ".kiln",
        value_name = "DIR",
        value_hint = ValueHint::DirPath
    )]
    state_dir: PathBuf,
}

#[derive(Args, Debug)]
struct RecipeArgs {
    /// The recipe file
    #[arg(value_hint = ValueHint::FilePath)]
    recipe: PathBuf,
    /// Set a variable (repeatable): K=V; `version=X` overrides the recipe's version. Wins
    /// over --var-file, KILN_VAR_<K>, the var's `from:` and its `value:`
    #[arg(long = "var", value_name = "K=V", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Read variable values from a YAML file shaped like `vars:` (repeatable; a later file
    /// wins): keeps secrets off the command line
    #[arg(long = "var-file", value_name = "FILE")]
    var_files: Vec<PathBuf>,
}

/// `kiln build`'s arguments.
#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Build even if an image with the same fingerprint exists
    #[arg(long)]
    force: bool,
    /// Do not touch the launch template
    #[arg(long)]
    no_release: bool,
    /// Do not start an instance refresh after the release
    #[arg(long)]
    no_refresh: bool,
    /// Also write the manifest to this file
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    manifest: Option<PathBuf>,
    /// Print only the manifest JSON on stdout
    #[arg(long)]
    json: bool,
    /// On failure: `cleanup` removes everything; `abort` leaves the builder running for
    /// inspection and --resume (refused when CI is set, unless --keep-in-ci)
    #[arg(long, value_enum, default_value_t = OnErrorArg::Cleanup)]
    on_error: OnErrorArg,
    /// Allow --on-error=abort when CI is set
    #[arg(long)]
    keep_in_ci: bool,
    /// Continue build BUILD_ID: on its kept builder after its last good step, or by
    /// waiting for its image
    #[arg(long, value_name = "BUILD_ID")]
    resume: Option<String>,
    /// Also write every phase's start, state changes and end to FILE as NDJSON
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    events: Option<PathBuf>,
    /// Exit 3 when a hold (`kiln rollback`) kept the image from being released (default: exit
    /// 0, with "release": "held" in the manifest)
    #[arg(long, conflicts_with = "no_release")]
    require_release: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a recipe and print its plan and fingerprint, without any AWS call
    Validate {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
    },
    /// Build the image, then release it to the launch template
    Build(BuildArgs),
    /// Launch template versions, their images and builds, newest first
    History {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Show only the newest N versions
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier image the launch template's default again
    Rollback {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The launch template version to make the default
        #[arg(long, value_name = "VERSION", conflicts_with = "image")]
        to: Option<i64>,
        /// Create a new version from the current default with this image
        #[arg(long, value_name = "AMI_ID")]
        image: Option<String>,
        /// Accept an image (or a version's image) that kiln did not build for this recipe
        #[arg(long)]
        allow_foreign: bool,
        /// Accept an image (or a version's image) that failed its test phase
        #[arg(long)]
        allow_failed_test: bool,
        /// Do not start an instance refresh
        #[arg(long)]
        no_refresh: bool,
        /// Do not ask for confirmation on a terminal
        #[arg(long, short = 'y')]
        yes: bool,
        /// Only say what the rollback would do
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Where the release stands: the launch template's versions and images, the hold, the
    /// group's instances with their health, and any instance refresh
    Status {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Follow the group's instance refresh until it ends
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Release an image explicitly (the newest of the recipe, or --image) and clear the hold a
    /// rollback put
    Release {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The image to release (default: the newest available image built from this recipe)
        #[arg(long, value_name = "AMI_ID")]
        image: Option<String>,
        /// Accept an image that kiln did not build for this recipe
        #[arg(long, requires = "image")]
        allow_foreign: bool,
        /// Accept an image that failed its test phase
        #[arg(long, requires = "image")]
        allow_failed_test: bool,
        /// Do not start an instance refresh
        #[arg(long)]
        no_refresh: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deregister this recipe's old images and delete their snapshots
    Prune {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// How many of the newest images to keep (default: the recipe's release.keep)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Only say what would be deleted, and why the others stay
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove what dead builds left behind (builders, unfinished images), found by tag
    Gc {
        /// Only resources at least this old (a build running elsewhere is younger)
        #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_duration)]
        older_than: Duration,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the least-privilege IAM policy the caller needs for this recipe
    IamPolicy {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The role inside the builder's instance profile (name or ARN), which iam:PassRole is
        /// checked on; without it the role is guessed to have the profile's name
        #[arg(long, value_name = "ROLE")]
        builder_role: Option<String>,
    },
    /// Write a starter recipe NAME.yaml (and its files/) that validates as written
    Init {
        /// The recipe's name, also its launch template's
        name: String,
    },
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print a man page (roff): kiln(1), or kiln-COMMAND(1); --dir writes them all
    Man {
        /// The command whose page to print (default: kiln(1), the overview)
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(MAN_PAGES), conflicts_with = "dir")]
        command: Option<String>,
        /// Write kiln.1 and every kiln-COMMAND.1 into DIR (created if missing) instead
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of recipes (shipped as schema/recipe.schema.json), or with
    /// --fragment of included files (schema/fragment.schema.json)
    Schema {
        /// The schema of a file that a recipe includes
        #[arg(long)]
        fragment: bool,
    },
}

/// The commands with a page of their own, kiln-COMMAND(1): every subcommand (a unit test checks
/// the list against the command-line definition).
const MAN_PAGES: [&str; 13] = [
    "validate",
    "build",
    "history",
    "rollback",
    "status",
    "release",
    "prune",
    "gc",
    "iam-policy",
    "init",
    "completions",
    "man",
    "schema",
];

/// The shells `kiln completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn parse_var(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {text:?}")),
    }
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 30m, 6h, 2days)"))
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::prelude::*;
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let targets = if verbose >= 2 {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::DEBUG)
    } else {
        tracing_subscriber::filter::Targets::new()
            .with_target("kiln", level)
            .with_default(tracing::Level::ERROR)
    };
    // Colours only on a terminal, and never in CI: logs must stay plain text there.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi),
        )
        .with(targets)
        .try_init();
}

/// How progress is shown on stderr. `--json` changes stdout only: a CI log still shows what the
/// build did and when.
fn progress(global: &Global) -> Progress {
    use std::io::IsTerminal;
    let mode = if global.quiet {
        Mode::Quiet
    } else if global.no_progress
        || global.verbose > 0
        || std::env::var_os("CI").is_some()
        || !std::io::stderr().is_terminal()
    {
        Mode::Plain
    } else {
        Mode::Bars
    };
    Progress::new(mode, global.verbose > 0)
}

/// `--on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnErrorArg {
    Cleanup,
    Abort,
}

impl OnErrorArg {
    /// The pipeline's value; `abort` is refused in CI (it would leak builders) unless forced.
    fn checked(self, keep_in_ci: bool) -> Result<OnError> {
        match self {
            OnErrorArg::Cleanup => Ok(OnError::Cleanup),
            OnErrorArg::Abort if std::env::var_os("CI").is_some() && !keep_in_ci => {
                Err(Error::Usage(
                    "--on-error=abort leaves the builder running, and CI is set: a pipeline would leak builders. \
                     Use the default --on-error=cleanup, or add --keep-in-ci if a later job removes the builder"
                        .into(),
                ))
            }
            OnErrorArg::Abort => Ok(OnError::Abort),
        }
    }
}

/// A fresh build id: UTC time plus randomness, sortable by start time.
pub fn new_build_id() -> String {
    // Milliseconds, so that builds started in the same second still sort by start time.
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':', '.'], "");
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", stamp.to_lowercase(), &random[..6])
}

/// The load options of `recipe`'s command: its `--var`s and `--var-file`s, `KILN_VAR_<name>`
/// from the environment, and the build id (placeholders when `None`: no build).
fn load_options(recipe: &RecipeArgs, build_id: Option<&str>, secrets: SecretValues) -> LoadOptions {
    let mut options = LoadOptions::without_build(recipe.vars.clone());
    options.var_files = recipe.var_files.clone();
    options.env = LoadOptions::env_values(std::env::vars());
    options.secrets = secrets;
    if let Some(build_id) = build_id {
        options.build_id = build_id.to_owned();
    }
    options
}

/// Loads the recipe for a command that sends no steps: secret values are not needed, and
/// `from:` sources are not read.
fn load(recipe: &RecipeArgs) -> Result<Plan> {
    load_with(recipe, &load_options(recipe, None, SecretValues::NotNeeded))
}

fn load_with(recipe: &RecipeArgs, options: &LoadOptions) -> Result<Plan> {
    let plan = load_plan(&recipe.recipe, options).map_err(Error::Recipe)?;
    for warning in &plan.warnings {
        eprintln!("{warning}");
    }
    Ok(plan)
}

/// The plan of a build, with the values of the `from:` sources that apply read through `cloud`
/// (after connecting, before anything is created), or `plan` itself when none applies.
async fn with_source_values(
    cloud: &dyn Cloud,
    recipe: &RecipeArgs,
    plan: Plan,
    options: LoadOptions,
) -> Result<Plan> {
    if plan.sources.iter().all(|source| source.overridden) {
        return Ok(plan);
    }
    let env = |name: &str| std::env::var(name).ok();
    let values = pipeline::sources::read(cloud, &plan.sources, &env).await?;
    let read: Vec<String> = values.values().cloned().collect();
    let options = LoadOptions {
        secrets: SecretValues::Read(values),
        ..options
    };
    load_plan(&recipe.recipe, &options).map_err(|problems| {
        // A check of a rendered field may quote a value read from a source: never shown.
        let error = Error::Recipe(problems);
        let text = error.to_string();
        let redacted = crate::plan::redact_values(&text, &read);
        match redacted == text {
            true => error,
            false => Error::Usage(redacted),
        }
    })
}

async fn connect(global: &Global) -> Result<Arc<dyn Cloud>> {
    let options = ConnectOptions {
        region: global.region.clone(),
        profile: global.profile.clone(),
        endpoint_url: global.endpoint_url.clone(),
        static_credentials: None,
    };
    Ok(Arc::new(Sdk::connect(&options).await?))
}

/// [`connect`], unless SIGINT or SIGTERM comes first.
async fn connect_or_interrupted(
    global: &Global,
    interrupts: &mut Interrupts,
) -> Result<Arc<dyn Cloud>> {
    tokio::select! {
        r = connect(global) => r,
        signal = interrupts.next() => Err(Error::Interrupted { signal }),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("could not encode JSON: {e}")))
}

/// Prints a command's result on stdout: its JSON with `--json`, else its human form.
fn print_result<T: serde::Serialize>(
    json: bool,
    value: &T,
    render: fn(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", to_json(value)?);
    } else {
        print!("{}", render(value));
    }
    Ok(())
}

/// Starts forwarding SIGINT and SIGTERM into an [`Interrupts`] stream.
fn listen_for_signals() -> Result<Interrupts> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, interrupts) = Interrupts::new();
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("listen for", "SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("listen for", "SIGTERM", e))?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            eprintln!("\n{name} received: cleaning up (send it again to abandon cleanup)");
            if tx.send(name).is_err() {
                break;
            }
        }
    });
    Ok(interrupts)
}

/// Runs `work`, or stops with exit 130 on SIGINT/SIGTERM (for commands with nothing to clean up).
async fn interruptible<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut interrupts = listen_for_signals()?;
    tokio::select! {
        r = work => r,
        signal = interrupts.next() => Err(Error::Interrupted { signal }),
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let global = &cli.global;
    match cli.command {
        Command::Validate { recipe, json } => validate(&recipe, json),
        Command::Build(args) => build_command(global, args).await,
        Command::History {
            recipe,
            limit,
            json,
        } => history(global, &recipe, limit, json).await,
        Command::Rollback {
            recipe,
            to,
            image,
            allow_foreign,
            allow_failed_test,
            no_refresh,
            yes,
            dry_run,
            json,
        } => {
            let allowed = Allowed {
                foreign: allow_foreign,
                failed_test: allow_failed_test,
            };
            let target = rollback_target(to, image, allowed)?;
            let how = RollbackHow {
                refresh: !no_refresh,
                yes,
                dry_run,
                json,
            };
            rollback(global, &recipe, &target, how).await
        }
        Command::Release {
            recipe,
            image,
            allow_foreign,
            allow_failed_test,
            no_refresh,
            json,
        } => {
            let choice = ReleaseChoice {
                image,
                allow_foreign,
                allow_failed_test,
                refresh: !no_refresh,
            };
            release(global, &recipe, choice, json).await
        }
        Command::Status { recipe, wait, json } => status(global, &recipe, wait, json).await,
        Command::Prune {
            recipe,
            keep,
            dry_run,
            json,
        } => prune(global, &recipe, keep, dry_run, json).await,
        Command::Gc {
            older_than,
            dry_run,
            json,
        } => gc(global, older_than, dry_run, json).await,
        Command::Init { name } => init(&name),
        Command::Completions { shell } => completions(shell),
        Command::Schema { fragment } => schema(fragment),
        Command::Man { command, dir } => man(command.as_deref(), dir.as_deref()),
        Command::IamPolicy {
            recipe,
            builder_role,
        } => iam_policy(global, &recipe, builder_role.as_deref()).await,
    }
}

/// What `kiln rollback` goes back to: `--to VERSION`, `--image AMI_ID`, or the previous release.
fn rollback_target(to: Option<i64>, image: Option<String>, allowed: Allowed) -> Result<Target> {
    if (allowed.foreign || allowed.failed_test) && to.is_none() && image.is_none() {
        return Err(Error::Usage(
            "--allow-foreign and --allow-failed-test apply to --to VERSION or --image AMI_ID: the default rollback only goes back to an earlier release".into(),
        ));
    }
    Ok(match (to, image) {
        (Some(version), _) => Target::Version { version, allowed },
        (None, Some(id)) => Target::Image { id, allowed },
        (None, None) => Target::Previous,
    })
}

/// `kiln completions SHELL`: prints the shell's completion script.
fn completions(shell: Shell) -> Result<i32> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "kiln", &mut std::io::stdout());
    if shell == clap_complete::Shell::Bash {
        print!("{}", bash_file_arguments(&command));
    }
    Ok(exit::OK)
}

/// clap's bash script offers only the flags where a command's first argument goes; for the
/// commands whose first argument is a file (the recipe), this completes file paths there
/// instead (zsh and fish scripts already do).
fn bash_file_arguments(command: &clap::Command) -> String {
    let takes_a_file = |sub: &&clap::Command| {
        sub.get_positionals()
            .next()
            .is_some_and(|arg| arg.get_value_hint() == ValueHint::FilePath)
    };
    let names: Vec<&str> = command
        .get_subcommands()
        .filter(takes_a_file)
        .map(clap::Command::get_name)
        .collect();
    format!(
        r#"
# The file argument (the recipe) of {commands}: file paths, not flags.
_kiln_file_argument() {{
    if [[ ${{COMP_CWORD}} -eq 2 && "${{COMP_WORDS[2]}}" != -* ]]; then
        case "${{COMP_WORDS[1]}}" in
            {alternatives})
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "${{COMP_WORDS[2]}}"))
                return 0
                ;;
        esac
    fi
    _kiln "$@"
}}
complete -F _kiln_file_argument -o bashdefault -o default kiln
"#,
        commands = names.join(", "),
        alternatives = names.join("|"),
    )
}

/// `kiln schema [--fragment]`: prints the JSON Schema of recipes or of included files.
fn schema(fragment: bool) -> Result<i32> {
    use crate::recipe::schema::{render, SchemaKind};
    let kind = if fragment {
        SchemaKind::Fragment
    } else {
        SchemaKind::Recipe
    };
    print!("{}", render(kind));
    Ok(exit::OK)
}

/// The command-line definition as the man pages show it: built, so that every subcommand
/// carries its display name (`kiln-build`) and the global options.
fn man_command() -> clap::Command {
    let mut command = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    command.build();
    command
}

/// The page of `command`, its footer naming kiln and its version.
fn man_page(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command).source(format!("kiln {}", env!("CARGO_PKG_VERSION")))
}

/// `kiln man [COMMAND] [--dir DIR]`: prints kiln(1) or kiln-COMMAND(1), or writes them all.
fn man(page: Option<&str>, dir: Option<&Path>) -> Result<i32> {
    let command = man_command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create the folder", dir, e))?;
        let mut pages = vec![command.clone()];
        pages.extend(command.get_subcommands().cloned());
        let mut written = Vec::new();
        for page in pages {
            let man = man_page(page);
            let path = dir.join(man.get_filename());
            let mut roff = Vec::new();
            man.render(&mut roff)
                .and_then(|()| std::fs::write(&path, roff))
                .map_err(|e| Error::io("write", &path, e))?;
            written.push(path);
        }
        for path in written {
            println!("wrote {}", path.display());
        }
        return Ok(exit::OK);
    }
    let page = match page {
        None => command,
        Some(name) => command
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("no man page for `{name}`")))?,
    };
    match man_page(page).render(&mut std::io::stdout()) {
        // A reader that stopped early (`kiln man build | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("write", "the man page", e))
        }
        _ => Ok(exit::OK),
    }
}

/// `kiln iam-policy`: prints the caller's least-privilege policy (its ARNs in the partition of
/// the region), and a note on the builder role: without `--builder-role`, the role inside the
/// builder's instance profile is read with `iam:GetInstanceProfile` when credentials allow it,
/// and guessed (with a warning) when they do not.
async fn iam_policy(
    global: &Global,
    recipe: &RecipeArgs,
    builder_role: Option<&str>,
) -> Result<i32> {
    let plan = load(recipe)?;
    let (found, template_role) = read_roles(global, &plan, builder_role).await;
    let role = builder_role
        .map(str::to_owned)
        .or_else(|| found.clone().ok().flatten());
    let region = global
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_default();
    let mut policy = crate::iam::policy(&plan, role.as_deref());
    match &template_role {
        Ok(Some(passed)) if role.as_deref() != Some(passed.as_str()) => {
            if let Some(statements) = policy["Statement"].as_array_mut() {
                statements.push(crate::iam::pass_template_role(passed));
            }
        }
        Ok(_) => {}
        Err(why) => eprintln!(
            "note: the release launch template's instance profile could not be read ({why}): launching from it (the tester, a group's refresh) also needs iam:PassRole on the role inside it"
        ),
    }
    let policy = crate::iam::in_partition(policy, crate::iam::partition(&region));
    println!("{}", to_json(&policy)?);
    if let Some(note) = crate::iam::source_key_note(&plan) {
        eprintln!("{note}");
    }
    match (&found, crate::iam::builder_role_note(&plan, role.as_deref())) {
        (Ok(Some(role)), _) => eprintln!(
            "note: iam:PassRole names the role `{role}`, read from the builder's instance profile (iam:GetInstanceProfile)"
        ),
        (Err(why), Some(note)) => {
            eprintln!("warning: could not read the builder's instance profile ({why})\n{note}")
        }
        (Ok(None), Some(note)) => eprintln!("{note}"),
        _ => {}
    }
    Ok(exit::OK)
}

/// How long `kiln iam-policy` waits for AWS to say which roles the profiles hold.
const ROLE_LOOKUP: Duration = Duration::from_secs(5);

/// The role inside the builder's instance profile (unless `--builder-role` names it) and the one
/// inside the instance profile the release launch template names, read at once with the caller's
/// credentials (`iam:GetInstanceProfile`, `ec2:DescribeLaunchTemplateVersions`) within
/// [`ROLE_LOOKUP`]: each `Ok(None)` when there is nothing to read, the reason when it cannot be
/// read.
async fn read_roles(
    global: &Global,
    plan: &Plan,
    builder_role: Option<&str>,
) -> (
    std::result::Result<Option<String>, String>,
    std::result::Result<Option<String>, String>,
) {
    let builder_profile = match builder_role {
        Some(_) => None,
        None => plan.builder.iam_instance_profile.as_deref(),
    };
    let lookups = async {
        let cloud = match connect(global).await {
            Ok(cloud) => cloud,
            Err(e) => return unread(builder_profile, plan, &e.to_string()),
        };
        let cloud = cloud.as_ref();
        let builder = async {
            let Some(profile) = builder_profile else {
                return Ok(None);
            };
            match profile_roles(cloud, profile).await? {
                Some(role) => Ok(Some(role)),
                None => Err(format!("instance profile {profile} has no role")),
            }
        };
        let template = async {
            let Some(release) = &plan.release else {
                return Ok(None);
            };
            let reference = crate::aws::TemplateRef::parse(&release.launch_template);
            let default = cloud
                .default_template_version(&reference)
                .await
                .map_err(|e| pipeline::first_line(&e.to_string()))?;
            match default.instance_profile {
                Some(profile) => profile_roles(cloud, &profile).await,
                None => Ok(None),
            }
        };
        futures::join!(builder, template)
    };
    match tokio::time::timeout(ROLE_LOOKUP, lookups).await {
        Ok(found) => found,
        Err(_) => {
            let why = format!("no answer from AWS within {} s", ROLE_LOOKUP.as_secs());
            unread(builder_profile, plan, &why)
        }
    }
}

/// [`read_roles`]'s answer when AWS could not be asked: `why` for each lookup there was.
fn unread(
    builder_profile: Option<&str>,
    plan: &Plan,
    why: &str,
) -> (
    std::result::Result<Option<String>, String>,
    std::result::Result<Option<String>, String>,
) {
    (
        builder_profile.map_or(Ok(None), |_| Err(why.to_owned())),
        plan.release
            .as_ref()
            .map_or(Ok(None), |_| Err(why.to_owned())),
    )
}

/// The first role inside instance profile `profile` (a name or an ARN).
async fn profile_roles(
    cloud: &dyn crate::aws::Cloud,
    profile: &str,
) -> std::result::Result<Option<String>, String> {
    match cloud.instance_profile(profile).await {
        Ok(Some(found)) => Ok(found.roles.first().cloned()),
        Ok(None) => Err(format!("instance profile {profile} does not exist")),
        Err(e) => Err(pipeline::first_line(&e.to_string())),
    }
}

/// `kiln init NAME`: writes the starter recipe, refusing to overwrite anything.
fn init(name: &str) -> Result<i32> {
    let files = crate::recipe::starter::starter(name).map_err(Error::Usage)?;
    if let Some((path, _)) = files.iter().find(|(path, _)| path.exists()) {
        return Err(Error::Usage(format!(
            "{} already exists: kiln init writes new files only (remove it, or pick another name)",
            path.display()
        )));
    }
    for (path, text) in &files {
        write_file(path, text)?;
        println!("wrote {}", path.display());
    }
    println!("next: kiln validate {name}.yaml, then kiln build {name}.yaml");
    Ok(exit::OK)
}

fn validate(recipe: &RecipeArgs, json: bool) -> Result<i32> {
    let plan = load(recipe)?;
    // Rendered scripts may hold secret values: nothing leaves unredacted.
    let text = if json {
        to_json(&render::plan_json(&plan))? + "\n"
    } else {
        render::plan_summary(&plan)
    };
    print!("{}", redact_json_too(&plan, &text));
    Ok(exit::OK)
}

/// `kiln build`: turns its arguments into build options and outputs, then builds.
async fn build_command(global: &Global, args: BuildArgs) -> Result<i32> {
    let BuildArgs {
        recipe,
        force,
        no_release,
        no_refresh,
        manifest,
        json,
        on_error,
        keep_in_ci,
        resume,
        events,
        require_release,
    } = args;
    let options = BuildOptions {
        build_id: new_build_id(),
        force,
        release: !no_release,
        refresh: !no_refresh,
        on_error: on_error.checked(keep_in_ci)?,
        resume,
    };
    let outputs = Outputs {
        manifest: manifest.as_deref(),
        events: events.as_deref(),
        json,
        require_release,
    };
    build(global, &recipe, options, outputs).await
}

/// Where a build's results go besides the terminal.
struct Outputs<'a> {
    manifest: Option<&'a Path>,
    events: Option<&'a Path>,
    json: bool,
    /// A held release exits 3.
    require_release: bool,
}

async fn build(
    global: &Global,
    recipe: &RecipeArgs,
    options: BuildOptions,
    outputs: Outputs<'_>,
) -> Result<i32> {
    let Outputs {
        manifest,
        events,
        json,
        require_release,
    } = outputs;
    let load_options = load_options(recipe, Some(&options.build_id), SecretValues::Build);
    let plan = load_with(recipe, &load_options)?;
    let progress = progress(global);
    let events = events.map(events::Events::create).transpose()?;
    let both;
    let reporter: &dyn crate::report::Reporter = match &events {
        Some(events) => {
            both = events::Both(&progress, events);
            &both
        }
        None => &progress,
    };
    let mut interrupts = listen_for_signals()?;
    let cloud = connect_or_interrupted(global, &mut interrupts).await?;
    let plan = tokio::select! {
        r = with_source_values(cloud.as_ref(), recipe, plan, load_options) => r?,
        signal = interrupts.next() => return Err(Error::Interrupted { signal }),
    };
    let ctx = Context {
        cloud,
        reporter,
        state_dir: global.state_dir.clone(),
    };
    let result = match pipeline::build::run_reporting(&ctx, &plan, &options, &mut interrupts).await
    {
        Ok(manifest) => manifest,
        Err(failed) => {
            // One document on stdout even for a failure, so CI has something to pick up; or
            // the same end summary as a success (phases, times, requests).
            if json {
                println!("{}", redact_json_too(&plan, &to_json(&failed.report)?));
            } else {
                print!("{}", render::failure_summary(&failed.report));
            }
            return Err(redact_error(&plan, failed.error));
        }
    };
    if let Some(path) = manifest {
        write_file(path, &(to_json(&result)? + "\n"))?;
    }
    print_result(json, &result, render::manifest_summary)?;
    if require_release && result.release == Some("held") {
        eprintln!(
            "error: --require-release: the image was not released (held by `kiln rollback`); run `{}` to release it and clear the hold",
            plan.command_hint("release")
        );
        return Ok(exit::HELD);
    }
    Ok(exit::OK)
}

async fn history(
    global: &Global,
    recipe: &RecipeArgs,
    limit: Option<usize>,
    json: bool,
) -> Result<i32> {
    let plan = load(recipe)?;
    let spec = pipeline::history::release_spec(&plan, "history")?;
    let mut found = interruptible(async {
        pipeline::history::history(connect(global).await?.as_ref(), spec).await
    })
    .await?;
    // Newest first: the limit keeps the newest.
    if let Some(limit) = limit {
        found.versions.truncate(limit);
    }
    print_result(json, &found, render::history)?;
    Ok(exit::OK)
}

async fn gc(global: &Global, older_than: Duration, dry_run: bool, json: bool) -> Result<i32> {
    let report = interruptible(async {
        let cloud = connect(global).await?;
        pipeline::gc::gc(cloud.as_ref(), &global.state_dir, older_than, dry_run).await
    })
    .await?;
    print_result(json, &report, render::gc)?;
    Ok(if report.has_failures() {
        exit::FAILURE
    } else {
        exit::OK
    })
}

/// How `kiln rollback` proceeds.
struct RollbackHow {
    refresh: bool,
    yes: bool,
    dry_run: bool,
    json: bool,
}

async fn rollback(
    global: &Global,
    recipe: &RecipeArgs,
    target: &Target,
    how: RollbackHow,
) -> Result<i32> {
    let plan = load(recipe)?;
    let spec = pipeline::history::release_spec(&plan, "rollback")?;
    let reporter = progress(global);
    let mut interrupts = listen_for_signals()?;
    let cloud = connect_or_interrupted(global, &mut interrupts).await?;
    let choice = tokio::select! {
        r = pipeline::rollback::choose(cloud.as_ref(), &plan, spec, target) => r?,
        signal = interrupts.next() => return Err(Error::Interrupted { signal }),
    };
    if how.dry_run {
        print_result(how.json, &choice, render::rollback_choice)?;
        return Ok(exit::OK);
    }
    eprint!("{}", render::rollback_choice(&choice));
    if !how.yes && !confirmed("roll back")? {
        return Err(Error::Refused(
            "rollback not confirmed: nothing changed".into(),
        ));
    }
    let journal = CommandJournal::open(&global.state_dir, &new_build_id(), &spec.launch_template)?;
    let ctx = Context {
        cloud,
        reporter: &reporter,
        state_dir: global.state_dir.clone(),
    };
    let hint = plan.command_hint("release");
    let work = pipeline::rollback::rollback(
        &ctx,
        &plan,
        spec,
        &choice,
        how.refresh,
        &journal.ledger,
        hint,
    );
    let outcome = journal.guard(&ctx, &mut interrupts, work).await?;
    print_result(how.json, &outcome, render::rollback)?;
    Ok(exit::OK)
}

/// On a terminal, asks "QUESTION? [y/N]" and reads the answer; without one (CI, a pipe), yes.
fn confirmed(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(true);
    }
    eprint!("{question}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("read", "the answer from the terminal", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// What `kiln release` releases.
struct ReleaseChoice {
    image: Option<String>,
    allow_foreign: bool,
    allow_failed_test: bool,
    refresh: bool,
}

async fn release(
    global: &Global,
    recipe: &RecipeArgs,
    choice: ReleaseChoice,
    json: bool,
) -> Result<i32> {
    let plan = load(recipe)?;
    let spec = pipeline::history::release_spec(&plan, "release")?;
    let reporter = progress(global);
    let mut interrupts = listen_for_signals()?;
    let cloud = connect_or_interrupted(global, &mut interrupts).await?;
    let journal = CommandJournal::open(&global.state_dir, &new_build_id(), &spec.launch_template)?;
    let ctx = Context {
        cloud,
        reporter: &reporter,
        state_dir: global.state_dir.clone(),
    };
    let request = pipeline::promote::Request {
        image: choice.image.as_deref(),
        allow_foreign: choice.allow_foreign,
        allow_failed_test: choice.allow_failed_test,
        refresh: choice.refresh,
        journal: &journal.ledger,
        release_hint: plan.command_hint("release"),
    };
    let work = pipeline::promote::promote(&ctx, &plan, spec, &request);
    let outcome = journal.guard(&ctx, &mut interrupts, work).await?;
    print_result(json, &outcome, render::promote)?;
    Ok(exit::OK)
}

async fn status(global: &Global, recipe: &RecipeArgs, wait: bool, json: bool) -> Result<i32> {
    let plan = load(recipe)?;
    let spec = pipeline::history::release_spec(&plan, "status")?;
    let reporter = progress(global);
    let found = interruptible(async {
        let ctx = Context {
            cloud: connect(global).await?,
            reporter: &reporter,
            state_dir: global.state_dir.clone(),
        };
        match wait {
            true => pipeline::status::wait(&ctx, spec, plan.timeouts.instance_refresh).await,
            false => pipeline::status::status(ctx.cloud.as_ref(), spec).await,
        }
    })
    .await?;
    print_result(json, &found, render::status)?;
    Ok(exit::OK)
}

async fn prune(
    global: &Global,
    recipe: &RecipeArgs,
    keep: Option<u32>,
    dry_run: bool,
    json: bool,
) -> Result<i32> {
    let plan = load(recipe)?;
    let keep = keep
        .or(plan.release.as_ref().map(|r| r.keep))
        .unwrap_or(crate::plan::DEFAULT_KEEP);
    let report = interruptible(async {
        pipeline::prune::prune(connect(global).await?.as_ref(), &plan, keep, dry_run).await
    })
    .await?;
    print_result(json, &report, render::prune)?;
    Ok(if report.has_failures() {
        exit::FAILURE
    } else {
        exit::OK
    })
}

/// Secrets never leave kiln through an error message either.
fn redact_error(plan: &Plan, error: Error) -> Error {
    if plan.secrets.is_empty() {
        return error;
    }
    let text = error.to_string();
    let redacted = plan.redact(&text);
    if redacted == text {
        error
    } else {
        let code = error.exit_code();
        match code {
            exit::INTERRUPTED => error,
            _ => Error::Refused(redacted),
        }
    }
}

/// Redacts secrets in their plain and their JSON-escaped spelling.
fn redact_json_too(plan: &Plan, text: &str) -> String {
    let mut redacted = plan.redact(text);
    for secret in &plan.secrets {
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if !escaped.is_empty() && escaped != secret {
            redacted = redacted.replace(escaped, "***");
        }
    }
    redacted
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create the folder", parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::new_build_id;

    #[test]
    fn every_command_has_a_man_page() {
        let names: Vec<String> = super::man_command()
            .get_subcommands()
            .map(|command| command.get_name().to_owned())
            .collect();
        assert_eq!(names, super::MAN_PAGES);
    }
    use crate::recipe::PLACEHOLDER_BUILD_ID;

    /// A character's class: a hex digit, or itself (`t`, `z`, `-`).
    fn class(c: char) -> char {
        match c {
            '0'..='9' | 'a'..='f' => 'h',
            other => other,
        }
    }

    #[test]
    fn the_placeholder_build_id_has_the_shape_of_a_real_one() {
        for _ in 0..20 {
            let real = new_build_id();
            let shape = |id: &str| id.chars().map(class).collect::<String>();
            assert_eq!(shape(PLACEHOLDER_BUILD_ID), shape(&real), "{real}");
        }
    }
}
