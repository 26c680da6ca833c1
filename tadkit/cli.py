"""The ``tadkit`` command line: one group, one sub-command per stage.

Stage commands live next to their stage (``tadkit/<stage>/cli.py``) and are
imported lazily, so ``tadkit --help`` stays fast and a stage's heavy imports
(torch, decord, OpenCV) are paid only by the command that needs them.

Expected problems raise :class:`tadkit.errors.TadkitError` (or a click usage
error); :func:`main` prints them as one ``error: ...`` line and exits non-zero.
``--debug`` (accepted anywhere before ``--``) re-raises them with their traceback; usage
errors stay one line.
"""
from __future__ import annotations

import importlib
import json
import sys

import click

from tadkit import __version__
from tadkit.errors import TadkitError

#: command name -> "module:attribute" of a click command; imported on first use.
STAGE_COMMANDS: dict[str, str] = {
    "extract": "tadkit.extract.cli:extract",
    "detect": "tadkit.detect.cli:detect",
    "evaluate": "tadkit.evaluate.cli:evaluate",
    "data": "tadkit.data.cli:data",
    "demo": "tadkit.demo:demo",
}


class HelpGroup(click.Group):
    """A click group whose command list shows each command's whole first sentence (wrapped to
    the terminal), never cut short with "..."."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _LazyGroup(HelpGroup):
    """A click group whose stage commands are imported when first used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(STAGE_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in STAGE_COMMANDS:
            return cmd
        module, attr = STAGE_COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tadkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Temporal action detection: extract features, detect actions, evaluate them."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print provenance, shapes and time ranges as JSON.")
@click.option("--limit", type=int, default=20, show_default=True,
              help="Videos listed in the text view (all are in --json).")
def info(path: str, as_json: bool, limit: int) -> None:
    """Print a feature store's provenance, per-video shapes and time ranges.

    Every array is listed with its shape; snippet features, the spatial grid
    and each level with the time range (seconds) of their first and last step.
    Video files that fail their check (damaged, from another store, ...) are
    listed with the reason, as are the videos extraction could not process.
    """
    from tadkit.data.features import FeatureStore

    store = FeatureStore.open(path)
    summary = store.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    prov = summary["provenance"]
    click.echo(f"feature store: {store.root}")
    for key in ("backbone", "streams", "feature_dim", "fps", "clip_len", "stride",
                "weights", "preprocessing", "extras", "tadkit_version", "format_version"):
        for line in _tree_lines(key, prov.get(key), "  "):
            click.echo(line)
    videos = summary["videos"]
    click.echo(f"  videos          {len(videos)}")
    for vid, shapes in list(videos.items())[:limit]:
        ranges = summary["time_ranges"][vid]
        parts = [f"{k}={tuple(v) if isinstance(v, list) else v}"
                 + (f" {ranges[k][0]:.3f}-{ranges[k][1]:.3f} s" if k in ranges else "")
                 for k, v in shapes.items()]
        if len(parts) == 1:
            click.echo(f"    {vid}: {parts[0]}")
        else:  # grid / levels: one array per line
            click.echo(f"    {vid}:")
            for part in parts:
                click.echo(f"      {part}")
    if len(videos) > limit:
        click.echo(f"    ... {len(videos) - limit} more (use --json for all)")
    for key, title in (("unreadable", "unreadable     "), ("failures", "failed videos  ")):
        if summary[key]:
            click.echo(f"  {title} {len(summary[key])}")
            for vid, reason in list(summary[key].items())[:limit]:
                click.echo(f"    {vid}: {reason}")


def _tree_lines(key: str, value: object, indent: str, list_items: int = 6) -> list[str]:
    """``key value`` on one line, or, for a non-empty mapping, ``key`` and its entries indented
    below (recursively); long lists show their first ``list_items`` items and their length."""
    if isinstance(value, dict) and value:
        lines = [f"{indent}{key}"]
        for k, v in value.items():
            lines += _tree_lines(str(k), v, indent + "  ", list_items)
        return lines
    if isinstance(value, list) and len(value) > list_items:
        shown = ", ".join(str(v) for v in value[:list_items])
        value = f"[{shown}, ...] ({len(value)} items)"
    elif isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    width = max(1, 17 - len(indent))
    return [f"{indent}{key:{width}s} {value}"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tadkit`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    args, debug = _hoist_debug(args)
    try:
        result = cli.main(args=args, prog_name="tadkit", standalone_mode=False)
        # A command that raises click.exceptions.Exit(code) (e.g. extract's exit 3 when some videos
        # failed) is returned as its code by click in non-standalone mode.
        if isinstance(result, int) and not isinstance(result, bool):
            return result
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # plain `tadkit`, `tadkit detect`, ...
        click.echo(exc.ctx.get_help())
        return 0
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.ClickException as exc:  # a usage error: one line, even with --debug
        click.echo(f"error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except (TadkitError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            raise
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return 0


def _hoist_debug(args: list[str]) -> tuple[list[str], bool]:
    """Accept ``--debug`` anywhere before ``--`` (e.g. after a sub-command): it becomes the
    group's option. Returns the arguments and whether it was given."""
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    debug = len(head) < end
    return (["--debug"] if debug else []) + head + args[end:], debug


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
