//! TOML configs for process, preconditioning and timer, validated with errors that name key and value.
