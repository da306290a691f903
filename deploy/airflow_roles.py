"""Who may do what in Airflow (FAB auth manager): this workflow's roles, and user accounts.

    python -m deploy.airflow_roles sync                                  # after `airflow db migrate`
    python -m deploy.airflow_roles add-user alice --role Reviewer < pw   # password on stdin, never in argv

| role | may |
|---|---|
| Viewer | read DAGs, runs, task logs, XComs, reports' links and the open reviews (FAB's built-in role) |
| Operator | what Viewer may, and trigger, clear and delete runs (training, ingest, retraining); not answer a review |
| Reviewer | what Viewer may, and answer the promotion review (Required Actions); not trigger anything |
| Admin | everything, users and roles included (FAB's built-in role) |

Operator and Reviewer are built from FAB's own permission lists (so a FAB upgrade's new read
permissions reach them too) and `sync` sets them exactly: edits made to these two roles in the UI
are undone by the next sync; make a new role instead. FAB ties answering a review to editing the
DAG (`can_edit` on DAGs), so a Reviewer can also pause and unpause DAGs; it cannot start or clear
anything.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
VIEWER, OPERATOR, REVIEWER, ADMIN = "Viewer", "Operator", "Reviewer", "Admin"
ROLES = (VIEWER, OPERATOR, REVIEWER, ADMIN)

Permission = tuple[str, str]  # (action, resource), FAB's names


def role_permissions() -> dict[str, list[Permission]]:
    """The permissions of the two roles this workflow adds to FAB's built-in ones."""
    from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride as fab
    from airflow.providers.fab.www.security import permissions as p

    answer_review = (p.ACTION_CAN_EDIT, p.RESOURCE_HITL_DETAIL)
    operator = [perm for perm in fab.VIEWER_PERMISSIONS + fab.USER_PERMISSIONS if perm != answer_review]
    reviewer = list(fab.VIEWER_PERMISSIONS) + [
        answer_review,
        (p.ACTION_CAN_ACCESS_MENU, p.RESOURCE_HITL_DETAIL),
        (p.ACTION_CAN_EDIT, p.RESOURCE_DAG),  # FAB checks DAG edit for any write below a DAG, answers included
    ]
    return {OPERATOR: _unique(operator), REVIEWER: _unique(reviewer)}


def _unique(perms: Iterable[Permission]) -> list[Permission]:
    return list(dict.fromkeys(perms))


def sync() -> dict[str, int]:
    """Create FAB's default roles and this workflow's, each with exactly its permissions; returns counts."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    counts: dict[str, int] = {}
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # FAB's built-in roles (Admin, Viewer, User, Op, Public) and their permissions
        for name, perms in role_permissions().items():
            role = sm.find_role(name) or sm.add_role(name)
            wanted = [sm.create_permission(action, resource) for action, resource in perms]
            wanted_ids = {perm.id for perm in wanted}
            for perm in list(role.permissions):
                if perm.id not in wanted_ids:
                    sm.remove_permission_from_role(role, perm)
            have = {perm.id for perm in role.permissions}
            for perm in wanted:
                if perm.id not in have:
                    sm.add_permission_to_role(role, perm)
            counts[name] = len(wanted)
    return counts


def add_user(username: str, role: str, password: str, email: str | None = None) -> bool:
    """Create the user with this one role, or reset an existing user's password and role. True if created."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < 12:
        raise ValueError("a password of at least 12 characters")
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        fab_role = sm.find_role(role)
        if fab_role is None:
            raise RuntimeError(f"role {role!r} does not exist yet: run `python -m deploy.airflow_roles sync` first")
        user = sm.find_user(username=username)
        if user is None:
            created = sm.add_user(username, username, role, email or f"{username}@localhost", fab_role, password)
            if not created:
                raise RuntimeError(f"FAB could not create user {username!r} (see the log above)")
            return True
        user.roles = [fab_role]
        sm.update_user(user)
        sm.reset_password(user.id, password)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.airflow_roles", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="create or refresh the roles (idempotent)")
    add = sub.add_parser("add-user", help="create a user (or reset its password and role); the password is read from stdin")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--email")
    args = parser.parse_args(argv)
    if args.command == "sync":
        for name, n in sync().items():
            print(f"role {name}: {n} permissions")
    else:
        password = sys.stdin.readline().rstrip("\n")
        created = add_user(args.username, args.role, password, args.email)
        print(f"user {args.username} ({args.role}) {'created' if created else 'updated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
