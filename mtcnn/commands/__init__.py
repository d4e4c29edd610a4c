"""One module per user command; each has ``main(argv) -> exit code`` (console scripts in
pyproject.toml, thin scripts in tools/, prepare_data/, train_models/, detection/)."""
