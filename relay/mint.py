"""Print a token for trying Relay out: `python -m relay.mint USER [--ttl S] [--channel C]...
[--class K]...`, signed with HS256 and the secret in RELAY_JWT_SECRET (as the shipped
config.yaml's `plugins.auth` reads it). In production, your app's backend mints tokens
(docs/identity.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import jwt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.mint", description=__doc__)
    parser.add_argument("user", help="the token's sub: the client's user")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds it is valid")
    parser.add_argument("--channel", action="append", help="a channels claim entry")
    parser.add_argument("--class", dest="classes", action="append", help="a classes entry")
    args = parser.parse_args(argv)
    secret = os.environ.get("RELAY_JWT_SECRET", "")
    if len(secret.encode()) < 32:
        print("error: set RELAY_JWT_SECRET to a secret of at least 32 bytes", file=sys.stderr)
        return 2
    claims: dict = {"sub": args.user, "exp": int(time.time() + args.ttl)}
    if args.channel:
        claims["channels"] = args.channel
    if args.classes:
        claims["classes"] = args.classes
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
