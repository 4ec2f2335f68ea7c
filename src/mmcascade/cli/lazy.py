"""A command group whose commands live in their own modules and are imported only when they run.

``mmcascade --help`` and ``mmcascade version`` stay instant (no torch, no transformers); ``mmcascade
search`` imports what searching needs and nothing else. Each command module imports its libraries at
module level, so this table is the CLI's one deferred import.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import click
import typer
from typer.core import TyperGroup


class LazyCommands(TyperGroup):
    """A :class:`TyperGroup` that also offers the commands of :attr:`lazy` (name -> (``"module:app"``,
    one-line help)); a command's module is imported the first time the command is resolved. Names in
    :attr:`groups` are command groups (``mmcascade index build``) even when their app has one command."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}
    groups: ClassVar[frozenset[str]] = frozenset()
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in self.lazy if name not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        target, summary = self.lazy[cmd_name]
        if self._listing:  # the group's help only needs the one-line summary
            return click.Command(cmd_name, help=summary, short_help=summary)
        module_name, _, attribute = target.partition(":")
        sub_app = getattr(importlib.import_module(module_name), attribute)
        command = typer.main.get_group(sub_app) if cmd_name in self.groups else typer.main.get_command(sub_app)
        command.name = cmd_name
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
