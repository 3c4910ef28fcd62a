"""Subcommands beyond fit/list, registered into the CLI's parser."""
