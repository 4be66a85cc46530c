"""``edgeplat rules check PATH``: validate an operator's state conflict rules file before using it.

Loads the file as the platform does (``edge_sync.rules.load_rules``): every rule name, every
resolver source (module, entry point, file) and the merge laws of every resolver are checked;
prints what was loaded. Exit codes: 0 valid, 2 invalid (the message names the field and fix).
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cli.common import CliError
from edge_sync import resolvers
from edge_sync.resolvers import RESOLVER_ATTR, ResolverLawError
from edge_sync.rules import RulesError, load_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rules", help="state conflict rules", description="Check an operator's state conflict rules file."
    )
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    c = rsub.add_parser(
        "check",
        help="validate a rules file and show its rules and resolvers",
        description="Validate a state rules file: rule names, resolver sources and merge laws.",
    )
    c.add_argument("path", help="the rules YAML file (resolver paths in it are relative to it)")
    c.set_defaults(handler=check)


def check(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(args.path)
    except RulesError as exc:
        raise CliError(str(exc)) from None
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"state rules file {args.path}: valid")
    out.print(f"version {rules.version}, content hash {rules.content_hash}")
    table = Table("namespace", "field", "rule", title="rules (first match wins: field, namespace, file)")
    table.add_row("*", "*", rules.default)
    for ns_name, ns in sorted(rules.namespaces.items()):
        if ns.default:
            table.add_row(ns_name, "*", ns.default)
        for field, rule in sorted(ns.fields.items()):
            table.add_row(ns_name, field, rule)
    out.print(table)
    used = sorted({n for n in rules.custom_resolvers().values()})
    if not used and not rules.resolvers:
        out.print("resolvers: none used")
        return 0
    res = Table("resolver", "from", "merge laws", "used by", title="custom resolvers")
    sources = rules.resolver_sources()
    for name in used:
        fn = rules.resolver(name)
        try:
            resolvers.check_laws(name, fn, getattr(fn, RESOLVER_ATTR, (name, None))[1])
            laws = "commutative, associative, idempotent on its probes"
        except ResolverLawError as exc:  # a registry resolver changed since it registered
            laws = f"BROKEN: {exc}"
        where = [w for w, n in rules.custom_resolvers().items() if n == name]
        res.add_row(name, sources.get(name, "?"), laws, ", ".join(where))
    for name, origin in sorted(rules.loaded_resolvers().items()):
        if name not in used:
            res.add_row(name, origin, "checked at load", "(named by no rule)")
    out.print(res)
    return 0
