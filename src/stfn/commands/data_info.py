"""`stfn data-info`: classes, train/test counts per split, which listed videos are not prepared, and the
warnings of a split that leaks (videos on both sides; groups, UCF101's ``_gNN_``, on both sides)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from stfn.data.prepare.manifest import load_prepared_manifest
from stfn.data.splits import DATASETS, available_splits, check_prepared, dataset_lines, load_split

HELP = ("Show a dataset's classes and train/test counts per split, and which listed videos are missing or "
        "failed in a prepared folder (exit status 1 if any are).")

SHOW = 5  # names shown per problem in the text report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=[*DATASETS, "help"],
                        help="format of the split files ('help' lists them, one line each)")
    parser.add_argument("--splits", default="", metavar="DIR",
                        help="split folder (ucfTrainTestlist, testTrainMulti_7030_splits, synthetic splits/, the "
                             "Kinetics CSV or SSv2 JSON folder); for --dataset folder the train/<class>/ "
                             "test/<class>/ video tree")
    parser.add_argument("--split", type=int, default=None, metavar="N", help="one split (default: all found)")
    parser.add_argument("--root", default="", metavar="PREPARED_DIR", help="folder written by `stfn prepare`")
    parser.add_argument("--train-list", default="", metavar="FILE", help="--dataset list: MMAction2 train list")
    parser.add_argument("--test-list", default="", metavar="FILE", help="--dataset list: MMAction2 test list")
    parser.add_argument("--class-names", default="", metavar="FILE", help="one class name per line (list, folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")


def _prepared_counts(records, videos) -> dict:
    """How many of one list's ``records`` the manifest's ``videos`` hold prepared: ``listed``, ``usable``
    (their count), the ``missing`` keys and the ``failed`` ones with their error."""
    usable, missing, failed = check_prepared(records, videos)
    return {"listed": len(records), "usable": len(usable), "missing": missing,
            "failed": [{"video": k, "error": videos[k].get("error")} for k in failed]}


def build_report(args: argparse.Namespace) -> dict:
    """The report as one JSON-ready dict (what ``--json`` prints; :func:`format_report` writes it as text)."""
    numbers = [args.split] if args.split is not None else available_splits(args.dataset, args.splits)
    manifest = load_prepared_manifest(args.root) if args.root else None
    report: dict = {"dataset": args.dataset, "splits_dir": args.splits, "root": args.root or None, "splits": []}
    for n in numbers:
        split = load_split(args.dataset, args.splits, n, train_list=args.train_list, test_list=args.test_list,
                           class_names=args.class_names)
        report["classes"] = split.classes
        entry = {"split": n, "train": len(split.train), "test": len(split.test), "overlap": split.overlap(),
                 "shared_groups": split.shared_groups(), "identity": split.identity,
                 "per_class": {side: [Counter(r.label for r in split.records(side))[i]
                                      for i in range(len(split.classes))] for side in ("train", "test")}}
        if manifest is not None:
            entry["prepared"] = {side: _prepared_counts(split.records(side), manifest.videos)
                                 for side in ("train", "test")}
        report["splits"].append(entry)
    if manifest is not None:
        statuses = Counter(v.get("status", "ok") for v in manifest.videos.values())
        report["manifest"] = {"videos": len(manifest.videos), "ok": statuses.get("ok", 0),
                              "failed": len(manifest.videos) - statuses.get("ok", 0), "flow": manifest.flow,
                              "format": manifest.format}
    return report


def _names(items: list, show: int = SHOW) -> str:
    names = [i if isinstance(i, str) else f"{i['video']} ({i['error'] or 'no error recorded'})" for i in items]
    return ", ".join(names[:show]) + (f", ... and {len(names) - show} more" if len(names) > show else "")


def format_report(report: dict) -> str:
    classes = report["classes"]
    shown = ", ".join(classes[:4]) + (f", ..., {classes[-1]}" if len(classes) > 4 else "")
    lines = [f"dataset {report['dataset']}: {len(classes)} classes ({shown})", "",
             "split  train   test  overlap  per class (train / test)  train sha256  test sha256"]
    for s in report["splits"]:
        tr, te = s["per_class"]["train"], s["per_class"]["test"]
        per_class = f"{min(tr)}-{max(tr)} / {min(te)}-{max(te)}"
        lines.append(f"{s['split']:>5}  {s['train']:>5}  {s['test']:>5}  {len(s['overlap']):>7}  {per_class:>24}"
                     f"  {s['identity']['train_list_sha256'][:12]}  {s['identity']['test_list_sha256'][:12]}")
        if s["overlap"]:
            lines.append(f"       warning: {len(s['overlap'])} videos are on both sides (`stfn train` refuses this "
                         f"split): {_names(s['overlap'])}")
        if s["shared_groups"]:
            groups = s["shared_groups"]
            lines.append(f"       warning: {len(groups)} group(s) of the names' _gNN_ (an actor or setting, UCF101's "
                         f"convention) have videos on both sides, so the test set is not leave-groups-out: "
                         f"{_names([g['group'] for g in groups])} (e.g. train '{groups[0]['train']}', "
                         f"test '{groups[0]['test']}')")
    if "manifest" in report:
        m = report["manifest"]
        flow = m["flow"] or {}
        lines += ["", f"prepared folder {report['root']}: {m['videos']} videos ({m['ok']} ok, {m['failed']} failed), "
                      f"flow {flow.get('algorithm', '?')} bound {flow.get('bound', '?')}, stored as {m['format']}"]
        for s in report["splits"]:
            for side in ("train", "test"):
                p = s["prepared"][side]
                text = f"split {s['split']} {side}: {p['usable']} of {p['listed']} usable"
                if p["missing"]:
                    text += f"; {len(p['missing'])} missing: {_names(p['missing'])}"
                if p["failed"]:
                    text += f"; {len(p['failed'])} failed: {_names(p['failed'])}"
                lines.append(text)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "help":
        print(dataset_lines())
        return 0
    report = build_report(args)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    unusable = any(p["missing"] or p["failed"] for s in report["splits"] for p in s.get("prepared", {}).values())
    return 1 if unusable else 0
