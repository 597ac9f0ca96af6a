"""`batcomputer generate-data | train | versions`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from batcomputer import apicontract
from batcomputer.training import fastform, features, train

log = logging.getLogger("batcomputer.training")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("generate-data", help="write deterministic police.uk-shaped CSVs",
                         description="Write deterministic police.uk-shaped street-level CSVs, "
                                     "one per force and month.")
    gen.add_argument("out", help="output folder")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--months", type=int, default=12, help="number of months (default 12)")
    gen.add_argument("--start", default="2024-01", help="first month, YYYY-MM")
    gen.add_argument("--rows-per-file", type=int, default=120,
                     help="rows per force and month (default 120)")
    gen.set_defaults(func=cmd_generate)

    tr = sub.add_parser("train", help="train a model and publish it to a registry folder",
                        description="Train on police.uk street-level CSVs and publish "
                                    "<registry>/<name>/<version>/ (a folder or an "
                                    "S3-compatible bucket).")
    tr.add_argument("data", nargs="+",
                    help="CSV files, folders of CSVs (recursive) or globs of either, e.g. "
                         "data/ or 'data/2024-0[1-6]' (quoted or not)")
    tr.add_argument("--registry", required=True,
                    help="registry: a folder or s3://BUCKET/PREFIX (endpoint, region and "
                         "credentials from BATCOMPUTER_S3_ENDPOINT or AWS_ENDPOINT_URL, "
                         "AWS_REGION and the standard AWS credential chain)")
    tr.add_argument("--name", default="crime", help="model name (default crime)")
    version = tr.add_mutually_exclusive_group()
    version.add_argument("--version", help="explicit MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], "
                                           "e.g. 2.0.0-rc.1 (checked against the rules)")
    version.add_argument("--bump", default="auto",
                         choices=["auto", "major", "minor", "patch", "pre", "release"],
                         help="derive the version from the published ones: auto (default) "
                              "from what changed; major, minor or patch; pre: the next "
                              "pre-release of the version auto would give (X.Y.Z-rc.1, then "
                              "-rc.2, ...); release: the release of the latest pre-release")
    tr.add_argument("--features", default=",".join(features.DEFAULT_FEATURES),
                    help=f"comma-separated inputs, from {', '.join(features.FEATURES)} "
                         f"(default {','.join(features.DEFAULT_FEATURES)})")
    tr.add_argument("--classifier", default="random-forest", choices=sorted(train.CLASSIFIERS))
    tr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="classifier parameter (JSON value), repeatable")
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--test-size", type=float, default=0.2)
    tr.add_argument("--min-place-share", type=float, default=0.005,
                    help="places with a smaller share of the rows become 'Other' (default 0.005)")
    tr.add_argument("--engine", choices=["stream", "memory"], default="stream",
                    help="stream (default): read the files in bounded batches and train on "
                         "counts per combination of inputs (or a bounded sample when an input "
                         "is continuous), in memory bounded by combinations, not rows; "
                         "memory: read every row into memory and train on the rows")
    tr.add_argument("--sample-rows", type=int, default=1_000_000, metavar="N",
                    help="with --engine stream and a continuous input (latitude, longitude): "
                         "train on a uniform sample of at most N rows (default 1,000,000)")
    tr.add_argument("--no-pickle", dest="pickles", action="store_false",
                    help="publish no pickles: only model.onnx, lookup.json and flags.json, "
                         "which servers that refuse pickles load (refused if the model "
                         "has no fast form)")
    tr.add_argument("--fast-form-tolerance", type=float, default=fastform.TOLERANCE,
                    metavar="DIFF",
                    help="largest difference in any probability between the fast form "
                         "(model.onnx) and the estimator for the fast form to be published "
                         f"(default {fastform.TOLERANCE:g})")
    tr.set_defaults(func=cmd_train)

    ver = sub.add_parser("versions", help="list the published versions of a model",
                         description="List the published versions of a model in semver "
                                     "precedence order: pre-releases before their release, "
                                     "build metadata ignored (ties ordered by the text).")
    ver.add_argument("registry", help="a folder or s3://BUCKET/PREFIX")
    ver.add_argument("name")
    ver.add_argument("--json", action="store_true", help="print metadata as JSON")
    ver.set_defaults(func=cmd_versions)


def cmd_generate(args: argparse.Namespace) -> int:
    from batcomputer.training import data

    files = data.generate(args.out, seed=args.seed, months=args.months, start=args.start,
                          rows_per_file=args.rows_per_file)
    print(f"Wrote {len(files)} files to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from batcomputer.training import data, publish

    config = train.TrainConfig(
        features=features.parse_feature_names(args.features),
        classifier=args.classifier,
        params=tuple(train.parse_param(p) for p in args.param),
        seed=args.seed, test_size=args.test_size, min_place_share=args.min_place_share)
    config.resolved_params()  # fail on bad parameters before reading any data
    registry = publish.open_registry(args.registry)
    existing = registry.signatures(args.name)
    if args.version:  # fail before reading data
        publish.refuse_published(map(publish.parse_version, existing),
                                 publish.parse_version(args.version))

    if args.engine == "memory":
        crimes, report = data.read_crimes(args.data)
        log.info("Data: %s", report.summary())
        trained = train.train(crimes, config)
    else:
        from batcomputer.training import aggregate

        report = data.ReadReport(files=[])
        rows = aggregate.collect(args.data, config, report, sample_rows=args.sample_rows,
                                 progress=not args.quiet)
        log.info("Data: %s", report.summary())
        trained = train.train_set(rows, config)
    summary = publish.DataSummary(fingerprint=report.fingerprint, files=len(report.files),
                                  rows_read=report.rows_read,
                                  rows_used=report.rows_kept - sum(trained.dropped.values()),
                                  dropped=dict(sorted({**report.dropped, **trained.dropped}.items())))
    signature = publish.Signature(api=apicontract.api_of(trained.schema),
                                  classifier=trained.classifier, params=trained.params,
                                  data=summary.fingerprint)
    version = publish.choose_version(existing, signature, requested=args.version, bump=args.bump)
    assert trained.x_train is not None and trained.x_test is not None
    fast = fastform.build(trained.model, trained.lookup, trained.schema["inputs"],
                          trained.x_train, trained.x_test, tolerance=args.fast_form_tolerance,
                          seed=config.seed)
    if fast.refused:
        log.warning("No fast form (model.onnx): %s. Servers will use predict_proba, which "
                    "needs the pickles.", fast.refused)
    path = registry.publish(args.name, version, trained, config, summary, fast,
                            pickles=args.pickles)
    m = trained.metrics
    form = ("no fast form" if fast.refused else
            f"fast form within {fast.record['max_abs_diff']:.1g}")
    print(f"Published {args.name} {version} to {path} "
          f"(accuracy {m['accuracy']:.3f}, ROC AUC {m['roc_auc']:.3f}, {form})")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from batcomputer.training import publish

    versions = publish.open_registry(args.registry).versions(args.name)
    if args.json:
        print(json.dumps(versions, indent=2))  # keys in precedence order
        return 0
    if not versions:
        print(f"No versions of {args.name!r} in {args.registry}", file=sys.stderr)
        return 1
    rows = [("VERSION", "CREATED", "CLASSIFIER", "INPUTS", "ACCURACY", "ROC_AUC", "ROWS")]
    for version, meta in versions.items():
        metrics = meta.get("metrics", {})
        rows.append((version, meta.get("created", "?"), meta["training"]["classifier"],
                     ",".join(i["name"] for i in meta["schema"]["inputs"]),
                     f"{metrics.get('accuracy', float('nan')):.3f}",
                     f"{metrics.get('roc_auc', float('nan')):.3f}",
                     f"{meta['data'].get('rows_used', 0):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
