//! The binary: configuration errors, the id file, `--json`, and Ctrl-C.
