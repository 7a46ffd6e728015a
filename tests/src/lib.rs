//! Cross-crate end-to-end tests for vault. The tests are in `tests/`; later
//! issues add helpers here to start the real relay binary and run the CLI.
#![forbid(unsafe_code)]
