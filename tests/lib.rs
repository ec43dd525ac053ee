//! All integration tests, linked into one binary (one link step on 2 cores). Each test starts
//! its own emulator, runs the compiled `kiln`, and checks the AWS state through the SDK.

mod support;

mod build;
mod faults;
mod iam;
mod input;
mod lifecycle;
