"""Reference libraries for the extraction benchmark: worker scripts (run in bench/.venv-refs) and their client."""
