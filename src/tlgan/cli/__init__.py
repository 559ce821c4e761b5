"""The `tlgan` command line: a thin shell over the Python API.

Each sub-module defines its commands and a ``register(group)`` function; option names
match the API's keyword names.
"""

from __future__ import annotations

import importlib
import logging

import click

from tlgan.cli.common import run_main

# Sub-modules whose commands make up the CLI, in the order `tlgan --help` lists them.
COMMAND_MODULES = [
    "tlgan.cli.pipeline",
    "tlgan.cli.editing",
    "tlgan.cli.train",
    "tlgan.cli.encoder",
    "tlgan.cli.inversion",
    "tlgan.cli.align",
    "tlgan.cli.report",
    "tlgan.cli.studio",
    "tlgan.cli.toyfaces",
    "tlgan.cli.delta",
    "tlgan.cli.translate",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="tlgan")
def cli(verbose: int) -> None:
    """tlgan: find, disentangle and use attribute axes of a pretrained image generator."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(cli)


def main() -> None:
    run_main(cli)
