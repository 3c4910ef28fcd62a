"""Subcommands beyond fit/list: each entry adds its parser to the CLI's subparsers."""
from cltrain import merge_command, report
from cltrain.launch import sweep

COMMANDS = [report.register, sweep.register, merge_command.register]
