"""Subcommands beyond fit/list: each entry adds its parser to the CLI's subparsers."""
from cltrain import ibcl_model, keep, merge_command, report
from cltrain.launch import sweep

COMMANDS = [report.register, sweep.register, ibcl_model.register, merge_command.register, keep.register]
