"""python -m weights list|show|fetch|verify|path: the official FCN weights from the command line.

Exit status: 0 on success, 2 with one ``error: ...`` line on stderr otherwise (unknown name, bad
checksum text, download failure, checksum mismatch), 130 when interrupted (a partial download is
kept as ``.part`` and resumes next time), 141 when stdout is closed early (``list | head -1``).
"""

from __future__ import annotations

import argparse
import json
import sys

from converters import cli

from .api import cached_path, fetch, verify
from .cache import CACHE_ENV, cache_dir, read_checksums
from .download import RetryPolicy
from .registry import WeightsRecord, get, records

INTERRUPTED = "interrupted (a partial download is kept as .part and resumes next time)"


def _size(num: int | None) -> str:
    if num is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num}"


def _checksum_state(record: WeightsRecord, recorded: dict) -> str:
    if record.sha256:
        return "sha256 published"
    if record.sha1:
        return "sha1 published"
    if record.filename and recorded.get(record.filename, {}).get("sha256"):
        return "sha256 recorded"
    return "none published" if record.released else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    cache = cache_dir(args.cache_dir)
    recorded = read_checksums(cache)
    rows = []
    for record in records():
        path = cache / record.filename if record.filename else None
        cached = path is not None and path.is_file()
        rows.append({
            "name": record.name, "title": record.title, "kind": record.kind, "released": record.released,
            "cached": cached, "path": str(path) if path else None,
            "size": path.stat().st_size if cached else None, "checksum": _checksum_state(record, recorded),
            "url": record.url,
        })
    if args.json:
        print(json.dumps({"cache": str(cache), "weights": rows}, indent=2))
        return 0
    print(f"cache: {cache}")
    width = max(len(row["name"]) for row in rows)
    print(f"{'NAME':<{width}}  {'STATE':<19}  {'CHECKSUM':<16}  TITLE")
    for row in rows:
        state = (f"cached {_size(row['size'])}" if row["cached"]
                 else ("not cached" if row["released"] else "no released weights"))
        print(f"{row['name']:<{width}}  {state:<19}  {row['checksum']:<16}  {row['title']}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    record = get(args.name)
    lines = [
        f"name:      {record.name}", f"title:     {record.title}", f"net:       {record.net}",
        f"url:       {record.url or '- (' + record.notes + ')'}",
        f"mirrors:   {', '.join(record.mirrors) or '-'}", f"file:      {record.filename or '-'}",
        f"size:      {record.approx_size_text} ({record.size_note})" if record.approx_size
        else "size:      -",
        f"sha1:      {record.sha1 or '-'}", f"sha256:    {record.sha256 or '-'}",
        f"checksum source: {record.checksum_source or 'none published; sha256 recorded at first download'}",
        f"paper:     {record.paper}", f"source:    {record.source}", f"license:   {record.license}",
    ]
    for spec in record.inputs:
        lines.append(f"input:     {spec.blob} ({spec.channels} ch, {spec.modality}, mean {spec.mean}): "
                     f"{spec.preprocessing}")
    for out in record.outputs:
        names = ", ".join(out.classes) if out.classes else "-"
        lines.append(f"output:    {out.blob} ({out.task}, {out.num_classes} classes): {names}")
    for row in record.metrics:
        values = ", ".join(f"{k} {v}" for k, v in row.metrics().items())
        lines.append(f"published: {row.weights} {row.method} on {row.dataset} {row.split}: {values} "
                     f"[{row.source}]")
    if record.notes:
        lines.append(f"notes:     {record.notes}")
    print("\n".join(lines))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    policy = RetryPolicy(retries=args.retries, connect_timeout=min(15.0, args.timeout),
                         read_timeout=args.timeout)
    path = fetch(args.target, sha256=args.sha256, sha1=args.sha1, dest=args.dest, cache_dir=args.cache_dir,
                 mirrors=args.mirror, policy=policy, progress=not args.quiet)
    print(path)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    result = verify(args.target, sha256=args.sha256, cache_dir=args.cache_dir)
    if result.checked:
        print(f"OK {result.path} sha256 {result.sha256} ({'; '.join(result.checked)})")
    else:
        print(f"UNVERIFIED {result.path} sha256 {result.sha256} (no checksum known for this file)")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    path = cached_path(args.name, args.cache_dir)
    print(path)
    if args.exists and not path.is_file():
        print(f"error: {args.name} is not downloaded (expected at {path})", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m weights`` argument parser."""
    parser = cli.Parser(prog="python -m weights",
                     description="The official FCN caffemodels: list, show, fetch (resumable, verified), "
                                 "verify, path.",
                     epilog=f"Cache: --cache-dir, else ${CACHE_ENV}, else $XDG_CACHE_HOME/fcn-port, "
                            "else ~/.cache/fcn-port. Extra mirrors: --mirror or $FCN_PORT_MIRRORS.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", help="weights cache folder (overrides $FCN_PORT_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)

    p = sub.add_parser("list", parents=[common],
                       help="every registry entry and whether it is cached (offline)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("show", parents=[common], help="the full record of one entry (offline)")
    p.add_argument("name")
    p.set_defaults(run=_cmd_show)

    p = sub.add_parser("fetch", parents=[common], help="download into the cache (or --dest), verified")
    p.add_argument("target", metavar="NAME|URL")
    p.add_argument("--sha256", help="expected sha256 (hex)")
    p.add_argument("--sha1", help="expected sha1 (hex)")
    p.add_argument("--dest", help="folder to put the file in instead of the cache")
    p.add_argument("--mirror", action="append", default=[], help="extra mirror base URL (repeatable)")
    p.add_argument("--retries", type=int, default=4, help="retries per URL on errors (default 4)")
    p.add_argument("--timeout", type=float, default=60.0, help="read timeout in seconds (default 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_fetch)

    p = sub.add_parser("verify", parents=[common],
                       help="check a cached entry or a file against its checksums")
    p.add_argument("target", metavar="NAME|FILE")
    p.add_argument("--sha256", help="also check this sha256 (hex)")
    p.set_defaults(run=_cmd_verify)

    p = sub.add_parser("path", parents=[common],
                       help="where an entry's file is or goes in the cache (offline)")
    p.add_argument("name")
    p.add_argument("--exists", action="store_true", help="exit 1 if the file is not there")
    p.set_defaults(run=_cmd_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""

    def body() -> int:
        args = build_parser().parse_args(argv)
        return args.run(args)

    return cli.run(body, interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
