"""Operator commands for the auth service.

    python -m auth_service.cli rotate-keys          # add a new signing key; older keys keep verifying
    python -m auth_service.cli prune-keys           # drop keys whose tokens have all expired
    python -m auth_service.cli set-role PHONE ROLE  # promote to admin or demote to user (recorded)
    python -m auth_service.cli ban PHONE | unban PHONE

They read the same settings (environment variables) as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from redis.asyncio import Redis

from auth_service.keys import generate_key, load_key_ring, prune_keys
from auth_service.phones import normalize_phone
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.users import ROLES, User, UserRepository
from facerestore_common import mongo
from facerestore_common.activity import ActivityOutbox
from facerestore_common.errors import DomainError
from facerestore_common.revocation import SessionRevocations


def rotate_keys(settings: Settings) -> str:
    directory = Path(settings.jwt_key_dir)
    key = generate_key(directory)
    ring = load_key_ring(directory, create_if_empty=False)
    return (
        f"new signing key {key.kid}; it signs after {settings.jwt_key_activation_seconds} s; "
        f"live keys: {', '.join(ring.kids)}"
    )


def prune(settings: Settings) -> str:
    keep = (
        settings.access_token_ttl_seconds
        + settings.jwt_leeway_seconds
        + settings.jwt_key_reload_seconds
        + settings.jwt_key_activation_seconds
    )
    deleted = prune_keys(Path(settings.jwt_key_dir), keep)
    return f"deleted keys: {', '.join(deleted)}" if deleted else "no key is old enough to delete"


async def _account_change(settings: Settings, raw_phone: str, action: str, role: str = "") -> User:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    redis = Redis.from_url(settings.redis_url)
    try:
        # Recorded like the service's own changes; the running auth service relays them to the admins.
        users = UserRepository(database, activity=ActivityOutbox(database, "auth"))
        sessions = SessionStore(
            database,
            settings.refresh_token_ttl_seconds,
            SessionRevocations(redis, settings.redis_key_prefix),
            settings.access_token_ttl_seconds,
        )
        phone = normalize_phone(raw_phone, settings.phone_default_region)
        user = await users.by_phone(phone)
        if user is None:
            raise SystemExit(f"no user with phone {phone}")
        actor = f"cli:{getpass.getuser()}"
        if action == "set-role":
            user = await users.set_role(user.id, role, actor=actor, via="cli")
        else:
            user = await users.set_banned(user.id, action == "ban", via="cli")
        if action != "unban":
            # Tokens carry the role and a banned user must be out at once: end every session.
            await sessions.revoke_user(user.id)
        return user
    finally:
        await redis.aclose()
        database.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auth_service.cli", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rotate-keys", help="add a new signing key")
    commands.add_parser("prune-keys", help="delete keys that no live token can need")
    role = commands.add_parser("set-role", help="change a user's role (recorded)")
    role.add_argument("phone")
    role.add_argument("role", choices=ROLES)
    for name in ("ban", "unban"):
        commands.add_parser(name, help=f"{name} a user").add_argument("phone")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        if args.command == "rotate-keys":
            print(rotate_keys(settings))
        elif args.command == "prune-keys":
            print(prune(settings))
        else:
            user = asyncio.run(_account_change(settings, args.phone, args.command, getattr(args, "role", "")))
            print(f"user {user.id}: role {user.role}, {'banned' if user.banned else 'not banned'}")
    except DomainError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
