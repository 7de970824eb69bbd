"""Secret redaction: one test per kind, consistency, precision/recall on a labelled set, speed.

Every fake secret is assembled at run time (``"AKIA" + "IOSFODNN7EXAMPLE"``, or a seeded
random tail) so this file holds nothing that scanners would flag as a real credential.
"""

from __future__ import annotations

import pickle
import random
import re
import string
import time

import pytest

from core.errors import CommitforgeError
from core.redact import KINDS, RedactConfig, Redactor

PLACEHOLDER = re.compile(r"REDACTED_([A-Z_]+)_([0-9a-f]{8})")
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
UPPER = string.ascii_uppercase


def fake(prefix: str, n: int, alphabet: str = ALNUM, seed: int = 0) -> str:
    """``prefix`` + ``n`` seeded random characters: a realistic-looking, made-up secret."""
    rng = random.Random(f"{prefix}/{n}/{seed}")
    return prefix + "".join(rng.choice(alphabet) for _ in range(n))


def pem(label: str, lines: int = 4, seed: int = 0, nl: str = "\n") -> str:
    body = nl.join(fake("", 64, B64, seed + i) for i in range(lines)) + nl + fake("", 20, B64, seed + 99) + "=="
    return f"-----BEGIN {label}-----{nl}{body}{nl}-----END {label}-----"


AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GH_TOKEN = fake("ghp_", 36, seed=1)

R = Redactor()


def red(text: str, redactor: Redactor = R) -> str:
    return redactor.redact(text)[0]


def kinds_of(text: str) -> list[str]:
    return [m.group(1).lower() for m in PLACEHOLDER.finditer(red(text))]


# -- one test per kind ---------------------------------------------------------------------


def test_aws_access_key():
    rust = f'const AWS_ACCESS_KEY_ID: &str = "{AWS_ID}";\n'
    toml = f'[default]\naws_access_key_id = "{fake("ASIA", 16, string.ascii_uppercase + "234567")}"\n'
    out, counts = R.redact(rust + toml)
    assert counts == {"aws_access_key": 2}
    assert AWS_ID not in out and "ASIA" not in out
    assert out.startswith('const AWS_ACCESS_KEY_ID: &str = "REDACTED_AWS_ACCESS_KEY_')
    assert red("XAKIA" + "IOSFODNN7EXAMPLE" + "Q") == "XAKIA" + "IOSFODNN7EXAMPLE" + "Q"  # part of a longer word


def test_aws_secret_key():
    env = f"AWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
    out, counts = R.redact(env)
    assert counts == {"aws_access_key": 1, "aws_secret_key": 1}
    assert AWS_SECRET not in out and "AWS_SECRET_ACCESS_KEY=REDACTED_AWS_SECRET_KEY_" in out
    rust = f'let aws_secret = "{fake("", 40, B64, seed=3)}";'
    assert kinds_of(rust) == ["aws_secret_key"]
    # 40 hex digits (a git object id) under a secret-ish name is a password, not an AWS key
    assert kinds_of(f'secret = "{fake("", 40, HEX)}"') == ["password"]


def test_gcp_api_key():
    maps = "https://maps.googleapis.com/maps/api/geocode/json?key={}"
    rust = f'let url = format!("{maps}", "{fake("AIza", 35, ALNUM + "-_")}");'
    out, counts = R.redact(rust)
    assert counts == {"gcp_api_key": 1} and "AIza" not in out
    assert out.startswith(
        'let url = format!("https://maps.googleapis.com/maps/api/geocode/json?key={}", "REDACTED_GCP_API_KEY_'
    )


def test_gcp_service_account():
    key_id = fake("", 40, HEX, seed=5)
    key = pem("PRIVATE KEY", nl="\\n")
    sa = (
        '{\n  "type": "service_account",\n  "project_id": "demo-123",\n'
        f'  "private_key_id": "{key_id}",\n  "private_key": "{key}\\n",\n'
        '  "client_email": "svc@demo-123.iam.gserviceaccount.com"\n}\n'
    )
    out, counts = R.redact(sa)
    assert key_id not in out and "BEGIN" not in out and "svc@" not in out
    assert counts == {"gcp_service_account": 1, "private_key": 1, "email": 1}
    assert '"private_key_id": "REDACTED_GCP_SERVICE_ACCOUNT_' in out
    assert '"private_key": "REDACTED_PRIVATE_KEY_' in out
    # a base64 key value without PEM armour is still caught by the service-account detector
    assert kinds_of(f'{{"private_key": "{fake("", 120, B64)}"}}') == ["gcp_service_account"]


def test_azure_key():
    account_key = fake("", 86, B64, seed=7) + "=="
    conn = (
        'let conn = "DefaultEndpointsProtocol=https;AccountName=demo;'
        f'AccountKey={account_key};EndpointSuffix=core.windows.net";'
    )
    out, counts = R.redact(conn)
    assert counts == {"azure_key": 1} and account_key not in out
    assert "AccountName=demo;AccountKey=REDACTED_AZURE_KEY_" in out and ";EndpointSuffix=core.windows.net" in out
    client_secret = fake("", 8, seed=8) + "~" + fake("", 25, ALNUM + "._-", seed=9)
    yaml = f"azure:\n  tenant_id: {fake('', 8, HEX)}\n  AZURE_CLIENT_SECRET: {client_secret}\n"
    assert kinds_of(yaml) == ["azure_key"]
    assert kinds_of(f'STORAGE_ACCOUNT_KEY = "{account_key}"') == ["azure_key"]


def test_github_token():
    rust = f'#[test]\nfn auth() {{\n    let client = Client::new("{GH_TOKEN}");\n}}\n'
    yaml = f"env:\n  GH_PAT: {fake('github_pat_', 82, ALNUM + '_', seed=2)}\n"
    out, counts = R.redact(rust + yaml)
    assert counts == {"github_token": 2}
    assert "ghp_" not in out and "github_pat_" not in out
    assert kinds_of(f"token = {fake('gho_', 36, seed=4)}") == ["github_token"]  # the shape wins over "password"


def test_gitlab_token():
    ci = f"variables:\n  GITLAB_TOKEN: {fake('glpat-', 20, ALNUM + '_-', seed=3)}\n"
    out, counts = R.redact(ci)
    assert counts == {"gitlab_token": 1} and "glpat-" not in out
    assert out.startswith("variables:\n  GITLAB_TOKEN: REDACTED_GITLAB_TOKEN_")


def test_slack_token_and_webhook():
    bot = "xoxb-" + fake("", 12, string.digits) + "-" + fake("", 13, string.digits) + "-" + fake("", 24)
    hook = (
        "https://hooks.slack.com/services/T"
        + fake("", 8, string.ascii_uppercase)
        + "/B"
        + fake("", 8, string.ascii_uppercase)
        + "/"
        + fake("", 24)
    )
    text = f'const SLACK_BOT: &str = "{bot}";\nconst WEBHOOK: &str = "{hook}";\n'
    out, counts = R.redact(text)
    assert counts == {"slack_token": 2} and "xoxb-" not in out
    assert '"https://hooks.slack.com/services/REDACTED_SLACK_TOKEN_' in out  # the host stays


@pytest.mark.parametrize(
    "label", ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]
)
def test_private_key_whole_block(label):
    block = pem(label, lines=6, seed=len(label))
    rust = f'const TEST_KEY: &str = r#"{block}"#;\n\nfn main() {{}}\n'
    out, counts = R.redact(rust)
    assert counts == {"private_key": 1}
    assert re.fullmatch(r'const TEST_KEY: &str = r#"REDACTED_PRIVATE_KEY_[0-9a-f]{8}"#;\n\nfn main\(\) \{\}\n', out)


def test_private_key_variants():
    rsa_enc = (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
        + fake("", 32, "0123456789ABCDEF")
        + "\n\n"
        + "\n".join(fake("", 64, B64, i) for i in range(3))
        + "\n-----END RSA PRIVATE KEY-----"
    )
    assert red(rsa_enc).startswith("REDACTED_PRIVATE_KEY_") and "DEK-Info" not in red(rsa_enc)
    split = "let key = concat!(\n" + "".join(f'    "{line}\\n",\n' for line in pem("EC PRIVATE KEY").split("\n")) + ");"
    out = red(split)
    assert (
        "BEGIN" not in out and "END EC" not in out and out.startswith('let key = concat!(\n    "REDACTED_PRIVATE_KEY_')
    )
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(fake("", 70, B64, i) for i in range(3))
    assert red(truncated).startswith("REDACTED_PRIVATE_KEY_") and fake("", 70, B64, 2) not in red(truncated)


def test_password_assignments():
    pw = "Tr0ub4dor&3x"
    cases = [
        f'let password = "{pw}";',
        f'const DB_PASSWORD: &str = "{pw}";',
        f'static API_KEY: &\'static str = "{fake("sk_live_", 24, seed=1)}";',
        f'Config {{ user: "app".into(), password: Some("{pw}".into()) }}',
        f'let client = Client::builder().password("{pw}").build()?;',
        f'[database]\npassword = "{pw}"\n',
        f'{{"username": "app", "password": "{pw}"}}',
        "db:\n  user: app\n  password: hunter2x\n",
        "db:\n  passwd: tanzanite\n",
        "DB_PASSWORD=hunter2x\n",
        "export API_TOKEN=" + fake("", 32, seed=5) + "\n",
        "Server=db;User Id=sa;Password=Winter2024;Database=app",
        "curl https://api.example.net/v1/items?api_key=" + fake("", 24, seed=6) + "&page=2",
        "cargo run -- --password=s3cr3t-Pa55",
        f'client_secret = "{fake("", 30, ALNUM + "-_", seed=7)}"',
    ]
    for text in cases:
        out, counts = R.redact(text)
        assert counts == {"password": 1}, (text, out)
        assert PLACEHOLDER.search(out), out
    assert red(f'let password = "{pw}";') == 'let password = "' + R.replacement("password", pw) + '";'  # only the value


def test_connection_string():
    cases = {
        "postgres://app:Xk9pQ2mLw@db.internal:5432/app": "postgres://app:{}@db.internal:5432/app",
        "redis://:Zq8wErT5y@cache:6379/0": "redis://:{}@cache:6379/0",
        "mongodb+srv://svc:Pa55w0rd!x@cluster0.mongodb.net/db": "mongodb+srv://svc:{}@cluster0.mongodb.net/db",
    }
    for url, shape in cases.items():
        out, counts = R.redact(f'let url = "{url}";')
        assert counts == {"connection_string": 1}, (url, out)
        password = url.split("://")[1].split("@")[0].split(":", 1)[1]
        assert out == 'let url = "' + shape.format(R.replacement("connection_string", password)) + '";'


def test_jwt():
    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    jwt = f"{header}.{payload}.{fake('', 43, ALNUM + '-_')}"
    out, counts = R.redact(f'req.header("Authorization", "Bearer {jwt}");')
    assert counts == {"jwt": 1} and header not in out
    assert out.startswith('req.header("Authorization", "Bearer REDACTED_JWT_')


def test_email():
    message = (
        "Fix token refresh\n\nReported-by: Ana Lima <ana.lima@corp-mail.io>\n"
        "Signed-off-by: Bo Chen <bo.chen+git@gmail.com>\n"
        "Co-authored-by: Dev <dev@example.com>\nCo-authored-by: bot <12345+bot@users.noreply.github.com>\n"
    )
    out, counts = R.redact(message)
    assert counts == {"email": 3}
    assert "ana.lima@" not in out and "bo.chen" not in out and "+bot@" not in out
    assert "Reported-by: Ana Lima <REDACTED_EMAIL_" in out and "<dev@example.com>" in out
    for kept in ("noreply@github.com", "git@github.com:org/repo.git", "user@localhost", "a@b.test", "icon@2x.png"):
        assert red(kept) == kept
    # git's default address names the person and their machine: personal, not a placeholder
    assert "REDACTED_EMAIL_" in red("Co-authored-by: Dana <dana@Danas-MacBook-Pro.local>")


@pytest.mark.parametrize("secret, kind", [
    (lambda: "AKIA" + "IOSFODNN7EXAMPLE", "aws_access_key"),
    (lambda: fake("AIza", 35, ALNUM + "-_"), "gcp_api_key"),
    (lambda: GH_TOKEN, "github_token"),
    (lambda: fake("glpat-", 20, ALNUM + "_-", seed=3), "gitlab_token"),
    (lambda: "xoxb-" + fake("", 12, string.digits) + "-" + fake("", 13, string.digits) + "-" + fake("", 24), "slack_token"),
    (lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
             + fake("", 43, ALNUM + "-_"), "jwt"),
    (lambda: pem("RSA PRIVATE KEY"), "private_key"),
    (lambda: "93.184.216.34", "ip_address"),
])
def test_a_secret_is_found_with_no_keyword_around_it(secret, kind):
    """Each kind is found by its own shape, with no 'key', 'token' or 'secret' in a name nearby."""
    text = f'let v = "{secret()}";\nlet w = 1;\n'
    assert R.redact(text)[1] == {kind: 1}


def test_ip_address():
    text = 'let upstream = "93.184.216.34:443";\nlet lan = "192.168.1.20"; let dns = "8.8.8.8";\n'
    out, counts = R.redact(text)
    assert counts == {"ip_address": 1} and "93.184.216.34" not in out
    assert 'let upstream = "REDACTED_IP_ADDRESS_' in out and "192.168.1.20" in out and "8.8.8.8" in out
    for kept in (
        'version = "2.1.0.4"',
        "oid 1.3.6.1.4.1.311",
        "mask 255.255.255.0",
        "10.1.2.3 172.20.0.1 127.0.0.1 0.0.0.0",
        "v1.20.30.40",
        "300.1.1.1",
    ):
        assert red(kept) == kept


# -- consistency ----------------------------------------------------------------------------


def test_same_secret_same_replacement_across_texts():
    old = f'fn client() -> Client {{\n    Client::new("{GH_TOKEN}")\n}}\n'
    new = (
        "/// Builds the client.\n"
        f'pub fn client() -> Client {{\n    Client::with_token("{GH_TOKEN}", Retry::default())\n}}\n'
    )
    (old_r, new_r), counts = R.redact_many([old, new])
    assert counts == {"github_token": 2}
    assert PLACEHOLDER.findall(old_r) == PLACEHOLDER.findall(new_r)
    assert red(old) == red(old, Redactor())  # a rerun (new instance, default key) is byte-identical
    other = fake("ghp_", 36, seed=2)
    assert red(f'"{other}"') != red(f'"{GH_TOKEN}"')
    assert red(old, Redactor(key=b"run-2")) != old_r  # a per-run key changes the placeholders


def test_removed_secret_does_not_survive_in_old_code():
    old = (
        "fn connect() -> Conn {\n"
        f'    let key = "{AWS_ID}";\n'
        f'    let secret = "{AWS_SECRET}";\n'
        "    Conn::new(key, secret)\n}\n"
    )
    new = (
        "fn connect() -> Conn {\n"
        '    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();\n'
        '    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();\n'
        "    Conn::new(key, secret)\n}\n"
    )
    old_r, new_r = red(old), red(new)
    assert AWS_ID not in old_r and AWS_SECRET not in old_r
    assert new_r == new
    old_lines, new_lines = old_r.splitlines(), new_r.splitlines()
    assert [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b] == [1, 2]  # no invented diff


def test_idempotent_and_no_special_tokens():
    text = "\n".join(s for s, _ in SECRETS) + "\n<|endoftext|> in the input stays as it is\n"
    once, counts = R.redact(text)
    assert sum(counts.values()) >= len(SECRETS)
    assert red(once) == once  # placeholders are never detected again
    for start, end, kind in R.find(text):
        assert re.fullmatch(rf"REDACTED_{kind.upper()}_[0-9a-f]{{8}}", R.replacement(kind, text[start:end]))
    assert set(once) - set(text) <= set(string.ascii_letters + string.digits + "_")
    assert once.count("<|") == text.count("<|") == 1 and once.count("|>") == text.count("|>") == 1


def test_kind_selection_config_and_pickling():
    text = f'password = "Winter2024x"\nmail: ana@corp-mail.io at 93.184.216.34\nkey: {AWS_ID}\n'
    assert R.redact(text)[1] == {"password": 1, "email": 1, "ip_address": 1, "aws_access_key": 1}
    only_mail = Redactor(kinds=["email"])
    assert only_mail.redact(text)[1] == {"email": 1}
    config = RedactConfig(ip_addresses=False, emails=False)
    assert config.redactor().redact(text)[1] == {"password": 1, "aws_access_key": 1}
    assert RedactConfig(enabled=False).redactor() is None
    clone = pickle.loads(pickle.dumps(R))
    assert clone == R and clone.redact(text) == R.redact(text)
    keyed = Redactor(key=b"k" * 100)
    assert pickle.loads(pickle.dumps(keyed)).redact(text) == keyed.redact(text)


def test_unknown_kind_is_a_one_line_error():
    with pytest.raises(CommitforgeError) as err:
        RedactConfig(kinds=["password", "ssn"]).validate()
    message = str(err.value)
    assert "\n" not in message and "'ssn'" in message and all(kind in message for kind in KINDS)
    with pytest.raises(CommitforgeError, match="'ssn'"):
        Redactor(kinds=["ssn"])


def test_non_ascii_text_keeps_offsets():
    # "İ" lower-cases to two characters: the name-based pass must still replace the right span
    text = 'let city = "İstanbul"; let password = "Winter2024x"; // ünïcödé'
    assert (
        red(text)
        == 'let city = "İstanbul"; let password = "' + R.replacement("password", "Winter2024x") + '"; // ünïcödé'
    )


# -- labelled set: recall and precision -----------------------------------------------------

SECRETS: list[tuple[str, str]] = [  # (text, the secret that must disappear)
    (f'const AWS_ACCESS_KEY_ID: &str = "{AWS_ID}";', AWS_ID),
    (
        f"aws_access_key_id = {fake('AKIA', 16, string.ascii_uppercase + '234567', 1)}",
        fake("AKIA", 16, string.ascii_uppercase + "234567", 1),
    ),
    (
        f"export AWS_ACCESS_KEY_ID={fake('ASIA', 16, string.ascii_uppercase + '234567', 2)}",
        fake("ASIA", 16, string.ascii_uppercase + "234567", 2),
    ),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    (f'let aws_secret_key = "{fake("", 40, B64, 11)}";', fake("", 40, B64, 11)),
    (f"aws_secret_access_key: {fake('', 40, B64, 12)}", fake("", 40, B64, 12)),
    (f'const MAPS_KEY: &str = "{fake("AIza", 35, ALNUM + "-_", 1)}";', fake("AIza", 35, ALNUM + "-_", 1)),
    (f"GOOGLE_API_KEY={fake('AIza', 35, ALNUM + '-_', 2)}", fake("AIza", 35, ALNUM + "-_", 2)),
    (f'"private_key_id": "{fake("", 40, HEX, 13)}",', fake("", 40, HEX, 13)),
    (f"AccountKey={fake('', 86, B64, 14)}==;EndpointSuffix=core.windows.net", fake("", 86, B64, 14)),
    (f"AZURE_CLIENT_SECRET={fake('', 34, ALNUM + '~._-', 15)}", fake("", 34, ALNUM + "~._-", 15)),
    (f'let token = "{GH_TOKEN}";', GH_TOKEN),
    (f"Authorization: token {fake('gho_', 36, seed=3)}", fake("gho_", 36, seed=3)),
    (f"GH_PAT={fake('github_pat_', 82, ALNUM + '_', 4)}", fake("github_pat_", 82, ALNUM + "_", 4)),
    (f"  GITLAB_TOKEN: {fake('glpat-', 20, ALNUM + '_-', 5)}", fake("glpat-", 20, ALNUM + "_-", 5)),
    (f"git clone https://oauth2:{fake('glpat-', 20, ALNUM, 6)}@gitlab.com/g/p.git", fake("glpat-", 20, ALNUM, 6)),
    (f'slack_token = "{fake("xoxb-", 50, ALNUM + "-", 7)}"', fake("xoxb-", 50, ALNUM + "-", 7)),
    (f"SLACK_APP_TOKEN={fake('xapp-1-', 40, ALNUM, 8)}", fake("xapp-1-", 40, ALNUM, 8)),
    (
        'webhook = "https://hooks.slack.com/services/'
        + f'T{fake("", 8, UPPER, 9)}/B{fake("", 8, UPPER, 9)}/{fake("", 24, seed=9)}"',
        fake("", 24, seed=9),
    ),
    (pem("RSA PRIVATE KEY", seed=21), fake("", 64, B64, 22)),
    (f'let key = r#"{pem("OPENSSH PRIVATE KEY", seed=31)}"#;', fake("", 64, B64, 32)),
    (f'"{pem("PRIVATE KEY", seed=41, nl=chr(92) + "n")}"', fake("", 64, B64, 42)),
    ('let password = "Tr0ub4dor&3x";', "Tr0ub4dor&3x"),
    ('const DB_PASS: &str = "q7!Rz9#Lm2";', "q7!Rz9#Lm2"),
    ('password: Some("Winter2024x".to_string()),', "Winter2024x"),
    ('.basic_auth("admin", Some("hunter2x")).password("Hunter2x!")', "Hunter2x!"),
    ('db_password = "Zx8#mQ2!vL"', "Zx8#mQ2!vL"),
    ('{"user": "svc", "passwd": "Kp3$Wq8&Zr"}', "Kp3$Wq8&Zr"),
    ("  password: tanzanite", "tanzanite"),
    ("SMTP_PASSWORD=Marmot4Lake", "Marmot4Lake"),
    ("Server=sql;Uid=sa;Pwd=Orchid77;", "Orchid77"),
    (f'let api_key = "{fake("sk_live_", 24, seed=16)}";', fake("sk_live_", 24, seed=16)),
    (f"API_TOKEN={fake('', 32, ALNUM, 17)}", fake("", 32, ALNUM, 17)),
    (f'SECRET_KEY = "{fake("", 50, ALNUM + "!@#%^&*(-_=+)", 18)}"', fake("", 50, ALNUM + "!@#%^&*(-_=+)", 18)),
    ('client_secret: "9aX7~fQ2.bL8zR_wT"', "9aX7~fQ2.bL8zR_wT"),
    ("DATABASE_URL=postgres://app:Xk9pQ2mLw@db.internal:5432/app", "Xk9pQ2mLw"),
    ('let url = "mysql://root:R00tPa55!@127.0.0.1:3306/test";', "R00tPa55!"),
    ("REDIS_URL=redis://:Zq8wErT5y@cache:6379/0", "Zq8wErT5y"),
    ("amqp://guest2:Lapin42x@rabbit:5672/", "Lapin42x"),
    (
        f"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.{fake('', 43, ALNUM + '-_', 19)}",
        fake("", 43, ALNUM + "-_", 19),
    ),
    (
        f'let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhdXRoIn0.{fake("", 86, ALNUM + "-_", 20)}";',
        fake("", 86, ALNUM + "-_", 20),
    ),
    ("Signed-off-by: Ana Lima <ana.lima@corp-mail.io>", "ana.lima@corp-mail.io"),
    ("/// Maintainer: bo.chen+rust@gmail.com", "bo.chen+rust@gmail.com"),
    ('authors = ["Kim Park <kim_park@uni.ac.kr>"]', "kim_park@uni.ac.kr"),
    ('let upstream = "93.184.216.34:443";', "93.184.216.34"),
    ("ssh deploy@52.94.236.248", "52.94.236.248"),
    ("allow from 151.101.1.69/32", "151.101.1.69"),
]

LOOK_ALIKES: list[str] = [
    'const COMMIT: &str = "' + fake("", 40, HEX, 50) + '";',
    'rev = "' + fake("", 40, HEX, 51) + '"',
    'sha256 = "' + fake("", 64, HEX, 52) + '"',
    'let id = Uuid::parse_str("' + "-".join(fake("", n, HEX, 53) for n in (8, 4, 4, 4, 12)) + '")?;',
    'const DATA: &str = "SGVsbG8gd29ybGQ=";',
    'assert_eq!(base64::encode(b"' + "any carnal pleas" + '"), "YW55IGNhcm5hbCBwbGVhcw==");',
    'const VECTOR: &str = "' + fake("", 44, B64, 54) + '";',
    'let digest = "' + fake("", 40, B64, 55) + '";',
    "fn parse_token_stream(input: TokenStream) -> Result<Token> {",
    "let token = self.next_token()?;",
    'let token = "while";',
    "pub struct Config { pub password: String, pub token: Option<String> }",
    "fn login(user: &str, password: &str) -> bool {",
    "class Settings:\n    password: str\n    api_key: Optional[str] = None\n",
    'version = "1.2.3.4"',
    'rust-version = "1.70.0"',
    'password = ""',
    'password = "changeme"',
    'password: "<password>"',
    "password: ${DB_PASSWORD}",
    'token = "xxxxxxxxxxxx"',
    'secret = "********"',
    'password: "{{ vault_db_password }}"',
    'let password = std::env::var("DB_PASSWORD")?;',
    'let token = env::var("GITHUB_TOKEN").expect("GITHUB_TOKEN not set");',
    'api_key = os.environ["API_KEY"]',
    "const token = process.env.SECRET_TOKEN;",
    'const PASSWORD_ENV: &str = "DB_PASSWORD";',
    'token_type = "Bearer"',
    "max_tokens = 4096",
    'password_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$' + fake("", 43, B64, 56) + '"',
    'const API_KEY_HEADER: &str = "x-api-key";',
    'error!("invalid password for user {}", user);',
    "Contact: dev@example.com, ops@mail.example.org",
    "From: GitHub <noreply@github.com>",
    "git remote add origin git@github.com:org/repo.git",
    'let bind = "0.0.0.0:8080"; let local = "127.0.0.1";',
    'let lan = "192.168.1.10"; let vpc = "10.0.3.7"; let dk = "172.17.0.2";',
    "netmask 255.255.255.0",
    'let dns = ["8.8.8.8", "1.1.1.1"];',
    "-----BEGIN PUBLIC KEY-----\n" + fake("", 64, B64, 57) + "\n-----END PUBLIC KEY-----",
    'const PEM_HEADER: &str = "-----BEGIN PRIVATE KEY-----";',
    'let url = "postgres://localhost:5432/app"; let u = "postgres://postgres:postgres@localhost/db";',
    '<img src="icon@2x.png">',
    "let span = Span::new(3, 7); let tokens = lexer.tokenize(src)?;",
    "if password.len() < 8 { return Err(Error::WeakPassword); }",
]


def test_labelled_set_precision_and_recall():
    assert len(SECRETS) >= 40 and len(LOOK_ALIKES) >= 40
    missed = [text for text, secret in SECRETS if secret in red(text) or not PLACEHOLDER.search(red(text))]
    false_alarms = [text for text in LOOK_ALIKES if red(text) != text]
    detected = len(SECRETS) - len(missed)
    recall = detected / len(SECRETS)
    precision = detected / (detected + len(false_alarms))
    print(
        f"\nredaction recall {recall:.3f} ({detected}/{len(SECRETS)}), precision {precision:.3f} "
        f"({len(false_alarms)} false alarms in {len(LOOK_ALIKES)} look-alikes)"
    )
    assert recall >= 0.95, missed
    assert precision >= 0.95, false_alarms


# -- speed ----------------------------------------------------------------------------------

NEAR_MISSES = [
    "AKIA1234",
    "ASIA" + "abc",
    "AIza" + "Short",
    "ghp_" + "short",
    "github_pat_x",
    "glpat-abc",
    "xoxb-1",
    "hooks.slack.com/services/x",
    "eyJhbGci.eyJ.",
    "user@host",
    "@@",
    "1.2.3.",
    "1.2.3.4.5",
    "999.1.1.1",
    "10.0.0.1",
    "password =",
    "password=",
    "token:",
    "secret(",
    'api_key = "',
    "passpass",
    "-----BEGIN RSA PRIVATE KEY-----",
    "PRIVATE KEY",
    "postgres://u:",
    "https://a:b",
    "AccountKey=abc",
    '"private_key": "',
    "a.b.c.d.e.f",
    "password: &str =",
    "AWS_SECRET=",
    "v1.2.3.4",
    "'''",
    '"""',
    "${",
    "-----END",
]


def test_pathological_single_line_is_fast():
    """2 MB on one line: a mix of near-misses, then blocks of single near-misses repeated."""
    blocks = [
        " ".join(NEAR_MISSES) + " ",
        "pass ",
        "password= ",
        "token: ",
        "10.0.0.1 ",
        "a" * 70 + "@ ",
        "-----BEGIN RSA PRIVATE KEY----- ",
        "x" * 300 + '" ',
    ]
    per = 2_000_000 // len(blocks)
    text = "".join(block * (per // len(block)) for block in blocks)  # whole repetitions: no new words
    text += " " * (2_000_000 - len(text))
    assert "\n" not in text and len(text) == 2_000_000
    best = float("inf")
    for _ in range(2):  # best of two: the machine may be shared
        start = time.perf_counter()
        out, counts = R.redact(text)
        best = min(best, time.perf_counter() - start)
    print(f"\n2 MB pathological line: {best * 1000:.0f} ms")
    assert best < 1.0
    assert not counts, dict(counts)  # near-misses, all of them (and no 2 MB diff on failure)
    assert out is text
