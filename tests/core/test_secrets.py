"""Secrets in a mined history never reach any output: commits, chunks, context, examples."""

from __future__ import annotations

import json

from core.report import write_report

from ..conftest import manifest, read_chunks, run_pipeline

# fake secrets, assembled so this file holds none of them whole
AWS_ID = "AKIA" + "Z7QXW4TR2PLM9KDE"
AWS_SECRET = "wJalrXUtnFEMI" + "/K7MDENG/bPxRfiCYz9QkLmP3aX"
GH_TOKEN = "ghp_" + "R8sT2vW4yZ6aB8cD0eF2gH4iJ6kL8mN0pQ2r"
SLACK = "xoxb-" + "2048-4096-" + "QwErTyUiOpAsDfGhJkL"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".c2lnbmF0dXJlLXZhbHVlLWhlcmU"
PEM = ("-----BEGIN RSA " + "PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA7x9vQk3mZ2pL8sT4nW6yB1cD3eF5gH7iJ9kL0mN2oP4q\n"
       + "r6sT8uV0wX2yZ4aB6cD8eF0gH2iJ4kL6mN8oP0qR2sT4uV6wX8yZ0aB2cD4e\n" + "-----END RSA " + "PRIVATE KEY-----")
DB_PASSWORD = "Tr0ub4dor" + "-and-3-horses"
EMAIL = "maria.lopez" + "@fastmail.com"
IP = "81.169" + ".145.92"
SECRETS = {"aws_access_key": AWS_ID, "aws_secret_key": AWS_SECRET, "github_token": GH_TOKEN, "slack_token": SLACK,
           "jwt": JWT, "private_key": PEM.splitlines()[1], "connection_string": DB_PASSWORD, "email": EMAIL,
           "ip_address": IP}

CONFIG_V1 = f'''//! Settings. Maintainer: {EMAIL}
pub const AWS_ACCESS_KEY_ID: &str = "{AWS_ID}";
pub const AWS_SECRET_ACCESS_KEY: &str = "{AWS_SECRET}";
pub const TOKEN: &str = "{GH_TOKEN}";
pub const DATABASE_URL: &str = "postgres://app:{DB_PASSWORD}@db.internal:5432/app";
pub const SIGNING_KEY: &str = "{PEM.replace(chr(10), chr(92) + "n")}";

pub struct Settings {{ pub host: String }}

pub fn connect(s: &Settings) -> String {{
    let peer = "{IP}";
    format!("{{}} via {{}} with {{}}", s.host, peer, "{SLACK}")
}}
'''
USER = f'''use crate::config::{{Settings, connect}};

pub fn login() -> String {{
    let bearer = "{JWT}";
    connect(&Settings {{ host: bearer.to_string() }})
}}
'''


def test_every_kind_of_secret_is_redacted_from_every_output(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("add config", {"Cargo.toml": '[package]\nname = "app"\n', "src/lib.rs": "pub mod config;\npub mod user;\n",
                            "src/config.rs": CONFIG_V1, "src/user.rs": USER})
    r.commit(f"rotate the token, thanks {EMAIL}", {"src/config.rs": CONFIG_V1.replace(
        "pub fn connect", "/// Connects.\npub fn connect")})
    # a commit that removes the keys: they must not survive on the "before" side either
    r.commit("drop hard-coded keys", {"src/config.rs": "\n".join(
        line for line in CONFIG_V1.splitlines() if "AWS" not in line and "TOKEN" not in line) + "\n"})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", "context=imports", "dedup.near=false", "split=random")
    write_report(run_dir)

    blobs = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.relative_to(run_dir).as_posix() for p in blobs} >= {
        "commits.jsonl", "chunks/00000.jsonl", "data/train/00000.jsonl", "stats.json", "MANIFEST.json", "report.html"}
    rows = read_chunks(run_dir)
    decoded = "\n".join(json.dumps(row) for row in rows)
    for path in blobs:
        text = path.read_bytes().decode("utf-8", "replace")
        for kind, secret in SECRETS.items():
            assert secret not in text, f"{kind} survives in {path.relative_to(run_dir)}"
            assert secret not in decoded
    counts = {k: v for stage in manifest(run_dir)["stages"].values() for k, v in stage["counts"].items()
              if k.startswith("redacted_")}
    for kind in SECRETS:
        assert counts.get(f"redacted_{kind}", 0) > 0, f"no {kind} redaction counted"
    # the deletion of the keys is still a real change, with both sides redacted
    deleted = [row for row in rows if row["subject"] == "drop hard-coded keys" and row["change"] == "deleted"]
    assert {row["qualname"].rsplit("::", 1)[-1] for row in deleted} >= {"AWS_ACCESS_KEY_ID", "TOKEN"}
    assert all("REDACTED_" in row["old_code"] for row in deleted)
    # the doc-comment commit changes connect only: the constants' redacted texts did not invent a diff
    second = [row["qualname"] for row in rows if row["subject"].startswith("rotate the token")]
    assert second == ["app::config::connect"]
    # one secret, one replacement: the same placeholder in the constant and in the context showing it
    placeholder = next(row["new_code"] for row in rows if row["qualname"] == "app::config::TOKEN").split('"')[1]
    assert placeholder.startswith("REDACTED_GITHUB_TOKEN_")
    assert "<|" not in decoded.replace("<|cf_", "")  # placeholders can never form special tokens
