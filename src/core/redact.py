"""Secret redaction for everything written to training data (old/new code, context, messages).

:class:`Redactor` finds secrets with compiled regular expressions and replaces each with a
deterministic placeholder, so a secret present in both the old and the new code of a pair
becomes the same text in both and redaction never invents a diff.

Replacement form
----------------
``REDACTED_<KIND>_<h>``: ``<KIND>`` is the kind upper-cased (``REDACTED_AWS_ACCESS_KEY_...``)
and ``<h>`` is 8 lowercase hex digits, ``blake2b(secret, key=key, digest_size=4)`` of the
UTF-8 (``surrogatepass``) bytes of the replaced text.  The placeholder uses only
``[A-Z0-9_a-f]``: it cannot form special tokens (``<|...|>``, ``<fim_prefix>``...), contains
no ``@``, ``:`` or quotes, and is never detected again (redaction is idempotent).  The
default key is fixed, so reruns are byte-identical; give a per-run key to make the
placeholders unlinkable across runs.  For ``password``, ``aws_secret_key``, ``azure_key``
assignments, ``gcp_service_account`` fields and ``connection_string`` only the *value* is
replaced: the name, quotes, scheme, user name and host stay.

Kinds (in priority order: where two detections overlap, the earlier kind wins)
------------------------------------------------------------------------------
``private_key``
    A whole PEM block ``-----BEGIN <X> PRIVATE KEY-----`` ... ``-----END <X> PRIVATE KEY-----``
    (plain, RSA, EC, DSA, OPENSSH, ENCRYPTED with ``Proc-Type``/``DEK-Info`` headers, PGP
    ``PRIVATE KEY BLOCK``), with real newlines or ``\\n`` escapes, or split over quoted
    lines.  A block cut off before its END line (a truncated text) is redacted through the
    base64 lines that follow its BEGIN line (at least 16 base64 characters).  Public keys,
    certificates and a lone BEGIN line (``const HEADER: &str = "-----BEGIN ...-----"``) are
    not redacted.
``gcp_service_account``
    Service-account JSON: the ``"private_key_id"`` value (40 hex digits) and the
    ``"private_key"`` value (PEM text with ``\n`` escapes, or base64); when that value holds
    a whole PEM block, ``private_key`` wins and the block is replaced as such.
``aws_access_key``
    ``AKIA``/``ASIA``/``ABIA``/``ACCA`` followed by 16 ``[A-Z0-9]``, as a whole token.
``gcp_api_key``
    ``AIza`` followed by 35 ``[0-9A-Za-z_-]``.
``github_token``
    ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + at least 36 ``[A-Za-z0-9]``, and
    ``github_pat_`` + at least 22 ``[A-Za-z0-9_]``.
``gitlab_token``
    ``glpat-``/``gldt-``/``glrt-``/``glptt-``/``glcbt-``/``glsoat-``/``glffct-`` + at least
    20 ``[A-Za-z0-9_-]``.
``slack_token``
    ``xox[abposr]-``/``xapp-`` tokens, and the secret path of incoming webhooks
    (``https://hooks.slack.com/services/`` is kept, ``T.../B.../...`` is replaced).
``jwt``
    ``eyJ<header>.eyJ<payload>.<signature>`` (base64url parts; the signature may be empty).
``azure_key``
    ``AccountKey=`` / ``SharedAccessKey=`` values in connection strings, and values
    assigned to names mentioning ``azure`` together with a key/secret word
    (``AZURE_CLIENT_SECRET``, ``azure_storage_key``), or to storage/account key names with
    a base64 value of at least 40 characters (``STORAGE_ACCOUNT_KEY``).
``aws_secret_key``
    A 40-character ``[A-Za-z0-9/+]`` value with upper case, lower case and a digit or
    ``/``/``+`` (not pure hex) assigned to a name mentioning ``aws`` or ``secret``
    (``AWS_SECRET_ACCESS_KEY``, ``aws_secret = "..."``).
``connection_string``
    The password in URL credentials ``scheme://user:PASSWORD@host`` (``redis://:PASSWORD@``
    too); the scheme, user name and host are kept.
``password``
    Values assigned to names containing a secret word (``password``, ``passwd``, ``pwd``,
    ``pass``, ``passphrase``, ``secret``, ``token``, ``credential(s)``, ``api_key``/
    ``apikey``, ``access_key``, ``secret_key``, ``private_key``, ``auth_key``,
    ``signing_key``, ``encryption_key``, ``master_key``; any case, snake/kebab/camel/dotted):
    ``let password = "..."``, ``const API_KEY: &str = "..."``, ``password: Some("...")``,
    ``static KEY: &[u8; 32] = b"..."``, ``.password("...")``, ``password = "..."``
    (TOML), ``"password": "..."`` (JSON),
    ``password: ...`` (YAML), ``DB_PASSWORD=...`` (env, ``export`` too), ``--password=...``,
    ``Password=...;`` (ADO strings), ``?token=...&`` (query strings).
``email``
    E-mail addresses (commit trailers such as ``Signed-off-by`` included).
``ip_address``
    Public IPv4 addresses.

What is *not* redacted (precision)
----------------------------------
* Git object ids and other hex digests, UUIDs, base64 test data and hashes that are not
  assigned to a secret-ish name; Rust identifiers and paths; version strings.
* Placeholders and indirections as secret values: empty or shorter than 4 characters;
  for names whose only secret word is a token/key word or the ambiguous ``pass``/``pwd``
  (compiler passes, working directories), anything that does not look random: 8+
  characters with letters and digits, or 16+ of mixed case that are not CamelCase words
  (``let token = "while"`` in a lexer is not a secret); a single repeated character
  (``xxxx``, ``****``); well-known defaults and stand-ins (``changeme``, ``password``, ``secret``, ``admin``, ``root``,
  ``test``, ``dummy``...; anything containing ``example``, ``placeholder``, ``your_``,
  ``xxxx``, a secret word...), templates and interpolations (``${PASSWORD}``, ``{{ pw }}``,
  ``{}``, ``%s``, ``<password>``, ``$VAR``), environment-variable names
  (``"DB_PASSWORD"``), environment/config lookups (``env::var("PASSWORD")``,
  ``os.environ["TOKEN"]``, ``config.password``, ``get_token()``), file paths and URLs,
  values with whitespace (messages and prompts), booleans, numbers and versions
  (``max_tokens = 100``, ``secret: v1.2.3``),
  types (``password: String``, ``password: &str``, ``token: Option<Token>``,
  ``password: str``), unquoted expressions after a typed binding
  (``const PASSWORD: &str = OTHER``), and already-redacted values.
* Names that are about a secret but do not hold one: last word ``type``, ``kind``, ``name``,
  ``label``, ``prompt``, ``hint``, ``message``, ``url``, ``path``, ``file``, ``env``, ``var``,
  ``field``, ``header``, ``len``, ``id``, ``hash``, ``regex``...  (``token_type``,
  ``PASSWORD_ENV``, ``password_hash``), or first word ``is``, ``has``, ``show``, ``max``,
  ``num``, ``expected``, ``next``... (``is_secret``, ``max_tokens``, ``next_token``).
* Unquoted values that are plain identifiers (``password: supersecret``) are redacted only
  where they cannot be code: a YAML ``key: value`` line, an env/ini ``NAME=value`` line, or
  ``Name=value;`` / ``Name=value&`` without spaces around ``=``.  Identifiers with letters
  *and* digits (``hunter2``) are redacted anywhere except as a type (``Sha256``).
  The replaced text is the value as written between its quotes (escapes included).
* Connection strings whose password is a placeholder (as above) or equals the user name
  (``postgres://postgres:postgres@localhost``, a well-known default).
* E-mail addresses in documentation domains (``example.com``/``.org``/``.net`` and their
  subdomains, ``*.example``, ``*.test``, ``*.invalid``, ``*.localhost``, ``localhost``,
  ``*.local``), role addresses with local part ``noreply``/``no-reply``/``donotreply``/
  ``do-not-reply``/``git``/``mailer-daemon``/``postmaster`` (``git@github.com``), and
  file-name look-alikes such as ``icon@2x.png`` (file-extension "TLD"s, ``.rs`` included).
  GitHub ``123+user@users.noreply.github.com`` addresses *are* redacted: they name a person.
* IPv4 addresses that are not public: ``0/8``, ``10/8``, ``100.64/10``, ``127/8``,
  ``169.254/16``, ``172.16/12``, ``192.0.0/24``, ``192.0.2/24``, ``192.168/16``,
  ``198.18/15``, ``198.51.100/24``, ``203.0.113/24``, ``224/4`` and above (multicast,
  reserved, ``255.255.255.x`` netmasks); well-known public DNS resolvers (``8.8.8.8``,
  ``8.8.4.4``, ``1.1.1.1``, ``1.0.0.1``, ``9.9.9.9``, ``149.112.112.112``, OpenDNS);
  dotted numbers that are versions or longer sequences (``1.2.3.4.5``, OIDs, ``v1.2.3.4``,
  a ``version``/``ver`` on the same line just before, octets with leading zeros or > 255).
  IPv6 addresses are not redacted.  Prose section numbers that look like public addresses
  (``section 3.2.1.4``) *are* redacted.
* Not detected at all: secrets without a recognizable shape or name (a bare random string
  passed as a positional argument), ``Authorization: Bearer ...`` headers (unless the token
  has a known shape), XML elements, passphrases containing whitespace.

Speed: each detector runs only when a cheap literal pre-filter (``"AKIA" in text``,
``"@" in text``...) says it might match, and every pattern starts with a literal (``@``,
``://``, ``.`` of a dotted quad, ``AKIA``...) so the regex engine skips ahead fast; boundary
look-behinds sit after that literal.  The name-based kinds take one pass per secret word over
the lower-cased text.  Repetitions are bounded, alternatives disjoint, and the unbounded-looking
ones atomic, so multi-megabyte single-line inputs take linear time (about 25 MB/s on ordinary
Rust source, a few hundred ms for 2 MB of dense near-misses).

:meth:`Redactor.find` returns the spans without replacing them.  A :class:`Redactor` holds only
its kinds and key (patterns are module globals), so it pickles cheaply into worker processes.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from core.errors import CommitforgeError

__all__ = ["KINDS", "RedactConfig", "Redactor"]

KINDS: tuple[str, ...] = (
    "private_key",
    "gcp_service_account",
    "aws_access_key",
    "gcp_api_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "jwt",
    "azure_key",
    "aws_secret_key",
    "connection_string",
    "password",
    "email",
    "ip_address",
)
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}
_NAMED_KINDS = frozenset({"password", "aws_secret_key", "azure_key"})  # found via assignments

_Span = tuple[int, int, str]  # (start, end, kind) of a text to replace

# ---------------------------------------------------------------------------------------
# Shape detectors.  Boundary look-behinds come *after* the first literal or class so that the
# regex engine keeps its fast scan for the first character.

_PEM_BEGIN = r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
_PEM_HEADERS = r"(?:[\s\\nrt\"'+,]{0,12}(?:Proc-Type|DEK-Info|Comment|Version):[^\r\n\\\"']{0,200})*"
# A terminated block; its body may also hold the quotes, commas and '+' of a key split over
# string literals.  No body character is '-', so a failed attempt stops at the next "-----".
_PEM_FULL_RE = re.compile(_PEM_BEGIN + _PEM_HEADERS + r"[A-Za-z0-9+/=\s\\\"',;]{0,32768}?" + _PEM_END)
# A block cut off before its END line: BEGIN, headers and the base64 lines that follow.
_PEM_CUT_RE = re.compile(
    _PEM_BEGIN
    + _PEM_HEADERS
    + r"(?P<body>(?:(?:[ \t]*(?:\r?\n|\\r?\\n)){1,3}[ \t]*"  # 1-3 line breaks (real or escaped), then
    + r"[A-Za-z0-9+/=]{1,128}(?=[ \t]*(?:\r?\n|\\n|[\"']|\Z))){1,512})"  # a whole line of base64
)
_PEM_MIN_BODY = 16  # base64 characters a cut-off block needs to count as a key
_BASE64_RUN_RE = re.compile(r"(?<!\\)[A-Za-z0-9+/=]+")

_AWS_ACCESS_RE = re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_TRIGGER = re.compile("A(?:KIA|SIA|BIA|CCA)")  # one scan for "A" instead of four
_GCP_API_RE = re.compile(r"A(?<![A-Za-z0-9_-]A)Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")
_GITHUB_TRIGGERS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
# whether one of the triggers occurs, in one scan
_GITHUB_TRIGGER = re.compile("|".join(re.escape(t) for t in _GITHUB_TRIGGERS))
_GITHUB_RE = re.compile(
    r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,251}|ithub_pat_[A-Za-z0-9_]{22,251})(?![A-Za-z0-9_])"
)
_GITLAB_TRIGGERS = ("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glsoat-", "glffct-")
_GITLAB_TRIGGER = re.compile("|".join(re.escape(t) for t in _GITLAB_TRIGGERS))
_GITLAB_RE = re.compile(r"g(?<![A-Za-z0-9_]g)l(?:pat|dt|rt|ptt|cbt|soat|ffct)-[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])")
_SLACK_RE = re.compile(
    r"x(?<![A-Za-z0-9_]x)(?:ox[abposr]|app)-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9_-])"
    r"|hooks\.slack\.com/(?:services|workflows|triggers)/(?!REDACTED_)(?P<hook>[A-Za-z0-9_/-]{20,250})"
)
_JWT_RE = re.compile(
    r"e(?<![A-Za-z0-9_-]e)yJ[A-Za-z0-9_-]{4,8192}\.eyJ[A-Za-z0-9_-]{4,8192}\.[A-Za-z0-9_-]{0,8192}(?![A-Za-z0-9_-])"
)
_AZURE_CONN_RE = re.compile(r"(?:Account|SharedAccess)Key=(?P<v>[A-Za-z0-9+/]{20,400}={0,2})")
_GCP_SA_RE = re.compile(
    r"\"private_key(?:_id\"\s{0,20}:\s{0,20}\"(?P<id>[0-9a-f]{40})\""
    r"|\"\s{0,20}:\s{0,20}\"(?P<key>[A-Za-z0-9+/=\\ -]{20,16384})\")"  # PEM with \n escapes, or base64
)
# URL credentials, found from the "://" (the scheme is checked by walking left).
_URL_CRED_RE = re.compile(
    r"://(?P<user>[^\s:/?#@\"'<>\[\]\\]{0,128}):(?P<pw>[^\s/?#\"'<>\[\]\\]{1,256})@(?=[A-Za-z0-9\[_])"
)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")

# From the "@" (a literal the engine finds fast): a local-part character before it, a domain with
# a letters-only TLD after it; the local part is then collected by walking left.
_EMAIL_RE = re.compile(
    r"@(?<=[A-Za-z0-9._%+-]@)[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)
_EMAIL_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_KEEP_EMAIL_DOMAINS = frozenset({"example.com", "example.org", "example.net", "localhost"})
_KEEP_EMAIL_SUFFIXES = (
    ".example",
    ".test",
    ".invalid",
    ".localhost",
    ".example.com",
    ".example.org",
    ".example.net",
)
_KEEP_EMAIL_LOCALS = frozenset(
    {"noreply", "no-reply", "donotreply", "do-not-reply", "git", "mailer-daemon", "postmaster"}
)
_FILE_TLDS = frozenset(
    "png jpg jpeg gif svg webp ico bmp tif tiff rs py js ts tsx jsx json toml yaml yml md txt html htm css lock "
    "zip gz tgz xz bz2 tar rlib so dll exe bin wasm pdf csv log ini cfg conf sh rb go java kt swift cpp hpp cc "
    "hh dat pem crt key pub mp3 mp4 wav ttf woff woff2 otf".split()
)

# The last three octets of a dotted quad, from its first "." (a literal the engine finds fast),
# not followed by a word character or ".<digit>"; the first octet is collected by walking left.
_IPV4_TAIL_RE = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?!\w|\.[0-9])")
_DIGITS = frozenset("0123456789")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PUBLIC_IPV4_RE = re.compile(  # octets <= 255 without leading zeros, outside non-public ranges
    r"(?!(?:0|10|127|22[4-9]|2[3-5][0-9])\.|100\.(?:6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|169\.254\."
    r"|172\.(?:1[6-9]|2[0-9]|3[01])\.|192\.168\.|192\.0\.[02]\.|198\.1[89]\.|198\.51\.100\.|203\.0\.113\.)"
    rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
)
_PUBLIC_RESOLVERS = frozenset(
    {"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222", "208.67.220.220"}
)
_VERSION_BEFORE_RE = re.compile(r"(?i)(?:version|\bver)\b[^\n]{0,40}\Z")

# ---------------------------------------------------------------------------------------
# Name-based detectors (password, aws_secret_key, azure_key).  One pass per secret word over
# ``text.lower()`` (same offsets when the length is unchanged; otherwise over the text with
# IGNORECASE), each pattern starting with the word as a literal so the engine skips ahead fast,
# finds the word, the rest of its name, an assignment operator and a value.  A name holding
# several words ("aws_secret_access_key") is matched by several passes and decided once.  "key"
# finds the compound names (api_key, access_key, private_key...); the qualifier is checked on
# the name's words.  ``(?=(?P<g>X))(?P=g)`` is an atomic group (X is never backtracked into) and
# quoted values are unrolled loops, which keeps near-miss inputs such as "passpass..." or
# "password=password=..." linear.
_KEYWORDS = ("pass", "pwd", "secret", "token", "credential", "key", "aws", "azure")
_WRAPPERS = (  # constructors around a literal value: password: Some("..."), Secret::new("...")
    r"(?:some|string::from|secret(?:string|box|vec)?::(?:new|from)|box::new|cow::(?:borrowed|owned)"
    r"|zeroizing::new|sensitive::new|protected::new)\([ \t]*"
)
# Values of 4+ characters that do not start with a secret word ("password=password=...").
_VALUE_START = r"(?!password|passwd|secret|token|api[_-]?key)"
_QUOTED = (
    r"[bruf]{0,2}(?:"
    rf"\"{_VALUE_START}(?=[^\"\r\n]{{4}})(?P<dq>[^\"\\\r\n]{{0,512}}(?:\\.[^\"\\\r\n]{{0,512}}){{0,16}})\""
    rf"|'{_VALUE_START}(?=[^'\r\n]{{4}})(?P<sq>[^'\\\r\n]{{0,512}}(?:\\.[^'\\\r\n]{{0,512}}){{0,16}})'"
    rf"|`{_VALUE_START}(?P<bq>[^`\r\n]{{4,512}})`)"
)
# Unquoted: up to 256 characters, not followed by a quote or an opening bracket (a call, an
# index, a generic type); a value that reaches the bound is matched and then dropped.
_UNQUOTED = rf"{_VALUE_START}(?=(?P<uv>[^\s\"'`,;(){{}}\[\]<>&|]{{4,256}}))(?P=uv)(?![\"'`(\[{{<])"
_ASSIGN_TAIL = (  # after the secret word: the rest of the name, the operator, the value
    r"(?=(?P<rest>[\w.-]{0,48}))(?P=rest)[\"']?(?P<pre>[ \t]*)"
    r"(?:(?P<call>\()"  # .password("...")
    r"|(?P<sep>:(?![:=])[ \t]*&?(?:'\w{1,20}[ \t]+)?(?:mut[ \t]+)?"  # a typed binding: &'static mut
    r"(?=(?P<type>[a-z_\[(][\w:<>\[\]()&',]{0,60}(?:;[ \t]*[0-9]+\])?))(?P=type)[ \t]+=(?![=>~])"
    r"|:=|=>|=(?![=>~])|:(?![:=])))"  # typed "NAME: &str =", Go ":=", "=>", "=", YAML/JSON ":"
    r"(?P<post>[ \t]*)"
    rf"(?:{_WRAPPERS})?"
    rf"(?:{_QUOTED}|{_UNQUOTED})"
)
_ASSIGN_RES = tuple(re.compile(word + _ASSIGN_TAIL) for word in _KEYWORDS)
_ASSIGN_RES_I = tuple(re.compile(word + _ASSIGN_TAIL, re.IGNORECASE) for word in _KEYWORDS)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# Names with a password word take any plausible value; names with only a token word (or the
# ambiguous "pass"/"pwd": compiler passes, working directories) need a random-looking one.
_PASSWORD_WORDS = frozenset({"password", "passwords", "passwd", "passphrase", "secret", "credential", "credentials"})
_TOKEN_WORDS = frozenset({"token", "apikey", "accesskey", "secretkey", "privatekey", "authkey", "pass", "pwd"})
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "auth", "signing", "encryption", "master"})
_DENY_LAST = frozenset(
    "type types kind kinds name names label labels prompt hint hints msg message messages error err errors "
    "url urls uri endpoint endpoints path paths file files filename dir env var vars field fields header headers "
    "len length size count regex re pattern format fmt policy mode prefix suffix ttl expiry expires expiration "
    "timeout id ids idx index provider manager store service source required enabled valid validator validation "
    "hash hashed hasher digest sha sha1 sha256 sha512 md5 checksum fingerprint limit min max lifetime duration at "
    "column col table class ref rotation strength schema template input widget visible visibility placeholder "
    "icon button dialog form box tokens span spans tree stream iter parser cache list map set stack queue "
    "buf buffer reader writer location loc pos position start end offset range tag tags version versions".split()
)
_DENY_FIRST = frozenset(
    "is has show hide use enable disable require requires allow num n max min total count no should can must "
    "next peek expect expected current cur prev first last".split()
)
_NON_VALUES = frozenset(
    "true false yes no on off none null nil undefined nan string str bool boolean int integer float double "
    "bytes byte object any char number optional required self this value".split()
)
_PLACEHOLDERS = frozenset(
    "changeit admin root default sample demo guest user username letmein pass123 password1 password123 "
    "secret123 mysecret mypassword my_password mytoken my_token s3cr3t p4ssw0rd p@ssw0rd passw0rd abc123 "
    "abcd1234 12345678 123456 1234 qwerty xyz test testing tests foo bar baz qux hidden masked tbd".split()
)
_PLACEHOLDER_PART_RE = re.compile(  # on the lower-cased value
    r"example|placeholder|change[_-]?me|dummy|your[_-]?|xxxx|\*\*\*\*|\.\.\.\.|redacted|insert|replace[_-]me"
    r"|fixme|todo|password|passwd|secret|token|api[_-]?key|[<>]|\$\{|\{\{|\}\}|%\(|%s|\{\}|\{0\}|\$\(|#\{|://"
)
_YAML_SIGILS = frozenset("*!&@#")  # alias, tag, anchor... as the first character of an unquoted value
_ENV_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z][A-Z0-9]*_")
_NUMBER_RE = re.compile(r"[+-]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?")
_VERSION_RE = re.compile(r"[vV]?[0-9]+(?:\.[0-9]+){1,3}(?:[-+][0-9A-Za-z.]+)?")
_REFERENCE_RE = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|->)[A-Za-z_$][\w$]*)+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL_TYPE_RE = re.compile(r"[A-Z][A-Za-z0-9]*[a-z0-9][A-Za-z0-9]*|[uif](?:8|16|32|64|128|size)")
_AWS_SECRET_RE = re.compile(r"[A-Za-z0-9/+]{40}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_PATH_RE = re.compile(r"/|~/|\./|\.\./|[A-Za-z]:[\\/]")
# Made of words ("ConstantFoldingPass", "max_retries"); each alternative takes a maximal run,
# so there is one way to split and no backtracking blow-up.
_WORDY_RE = re.compile(r"(?:[A-Z]?[a-z]{2,}(?![a-z])|[A-Z]{2,}(?=[A-Z][a-z]|[^A-Za-z]|\Z)|[A-Z](?![A-Za-z])|[_.:/-])+")
_SPACE_RE = re.compile(r"\s")
_DIGIT_RE = re.compile(r"[0-9]")


def _words(name: str) -> list[str]:
    """``AWS_SECRET_ACCESS_KEY`` / ``dbPassword`` / ``x-api-key`` -> lower-case words."""
    return [w.lower() for w in _WORD_RE.findall(name)]


def _placeholder(value: str, low: str) -> bool:
    """A value that stands in for a secret rather than being one (see the module docstring)."""
    if low in _PLACEHOLDERS or value.startswith("REDACTED_") or len(set(value)) <= 1:
        return True
    if value[0] in "$%{<[" or value[-1] in "}>]" or _PATH_RE.match(value):
        return True
    return _PLACEHOLDER_PART_RE.search(low) is not None


def _char_classes(value: str) -> int:
    """How many of lower case, upper case, digits and other characters ``value`` has."""
    return (
        (value != value.upper())
        + (value != value.lower())
        + (_DIGIT_RE.search(value) is not None)
        + (not value.isalnum())
    )


class Redactor:
    """Replace secrets in texts with deterministic ``REDACTED_<KIND>_<8 hex>`` placeholders.

    ``kinds`` selects detectors (default: all of :data:`KINDS`; an unknown kind raises
    :class:`CommitforgeError`); ``key`` keys the blake2b hash of the placeholders (a key longer
    than 64 bytes is hashed down to 64 first).
    """

    def __init__(self, kinds: Iterable[str] | None = None, key: bytes = b"commitforge") -> None:
        chosen = KINDS if kinds is None else (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for kind in chosen:
            if kind not in _PRIORITY:
                raise CommitforgeError(_unknown_kind_message(kind))
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(f"Redactor key must be bytes, not {type(key).__name__}")
        self.kinds: frozenset[str] = frozenset(chosen)
        self.key: bytes = bytes(key) if len(key) <= 64 else hashlib.blake2b(bytes(key)).digest()

    def __repr__(self) -> str:
        return f"Redactor(kinds={sorted(self.kinds, key=_PRIORITY.__getitem__)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactor) and (self.kinds, self.key) == (other.kinds, other.key)

    def __hash__(self) -> int:
        return hash((self.kinds, self.key))

    def __reduce__(self) -> tuple[type[Redactor], tuple[tuple[str, ...], bytes]]:
        return Redactor, (tuple(sorted(self.kinds, key=_PRIORITY.__getitem__)), self.key)

    # -- public API ------------------------------------------------------------------------

    def replacement(self, kind: str, secret: str) -> str:
        """The placeholder for ``secret`` detected as ``kind``."""
        digest = hashlib.blake2b(secret.encode("utf-8", "surrogatepass"), key=self.key, digest_size=4)
        return f"REDACTED_{kind.upper()}_{digest.hexdigest()}"

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """Return ``text`` with secrets replaced, and the number of replacements by kind."""
        counts: Counter[str] = Counter()
        spans = self.find(text)
        if not spans:
            return text, counts
        parts: list[str] = []
        cache: dict[tuple[str, str], str] = {}
        last = 0
        for start, end, kind in spans:
            secret = text[start:end]
            new = cache.get((kind, secret))
            if new is None:
                new = cache[kind, secret] = self.replacement(kind, secret)
            parts.append(text[last:start])
            parts.append(new)
            counts[kind] += 1
            last = end
        parts.append(text[last:])
        return "".join(parts), counts

    def redact_many(self, texts: Iterable[str]) -> tuple[list[str], Counter[str]]:
        """Redact each text; return the redacted texts (same order) and the summed counts."""
        out: list[str] = []
        total: Counter[str] = Counter()
        for text in texts:
            redacted, counts = self.redact(text)
            out.append(redacted)
            total.update(counts)
        return out, total

    def find(self, text: str) -> list[_Span]:
        """The non-overlapping ``(start, end, kind)`` spans :meth:`redact` replaces, in order."""
        if not text or not self.kinds:
            return []
        return _resolve(list(self._detect(text)))

    # -- detection -------------------------------------------------------------------------

    def _detect(self, text: str) -> Iterator[_Span]:
        kinds = self.kinds
        if "private_key" in kinds and "PRIVATE KEY" in text:
            yield from _find_pem(text)
        if "gcp_service_account" in kinds and '"private_key' in text:
            for m in _GCP_SA_RE.finditer(text):
                group = "id" if m.group("id") is not None else "key"
                yield m.start(group), m.end(group), "gcp_service_account"
        if "aws_access_key" in kinds and _AWS_TRIGGER.search(text):
            yield from ((m.start(), m.end(), "aws_access_key") for m in _AWS_ACCESS_RE.finditer(text))
        if "gcp_api_key" in kinds and "AIza" in text:
            yield from ((m.start(), m.end(), "gcp_api_key") for m in _GCP_API_RE.finditer(text))
        if "github_token" in kinds and _GITHUB_TRIGGER.search(text):
            yield from ((m.start(), m.end(), "github_token") for m in _GITHUB_RE.finditer(text))
        if "gitlab_token" in kinds and _GITLAB_TRIGGER.search(text):
            yield from ((m.start(), m.end(), "gitlab_token") for m in _GITLAB_RE.finditer(text))
        if "slack_token" in kinds and ("xox" in text or "xapp-" in text or "hooks.slack.com" in text):
            for m in _SLACK_RE.finditer(text):
                group = "hook" if m.group("hook") is not None else 0
                yield m.start(group), m.end(group), "slack_token"
        if "jwt" in kinds and "eyJ" in text:
            yield from ((m.start(), m.end(), "jwt") for m in _JWT_RE.finditer(text))
        if "azure_key" in kinds and "Key=" in text:
            yield from ((m.start("v"), m.end("v"), "azure_key") for m in _AZURE_CONN_RE.finditer(text))
        if "connection_string" in kinds and "://" in text:
            yield from _find_url_credentials(text)
        if not kinds.isdisjoint(_NAMED_KINDS):
            yield from _find_assignments(text, kinds)
        if "email" in kinds and "@" in text:
            yield from _find_emails(text)
        if "ip_address" in kinds:
            yield from _find_ipv4(text)


def _resolve(spans: list[_Span]) -> list[_Span]:
    """Non-overlapping spans in text order; of overlapping ones the higher-priority kind wins.

    Ties go to the earlier, then the longer span.  Disjoint detections (the usual case) take
    one sort; identical spans found by two detectors collapse to the higher-priority kind.
    """
    spans.sort()
    if all(prev[1] <= cur[0] for prev, cur in pairwise(spans)):
        return spans
    spans.sort(key=lambda s: (_PRIORITY[s[2]], s[0], s[0] - s[1]))
    kept: list[_Span] = []
    starts: list[int] = []
    for span in spans:
        start, end, _ = span
        i = bisect.bisect_right(starts, start)
        if (i > 0 and kept[i - 1][1] > start) or (i < len(kept) and kept[i][0] < end):
            continue
        kept.insert(i, span)
        starts.insert(i, start)
    return kept


def _find_pem(text: str) -> Iterator[_Span]:
    pos = 0
    while True:
        begin = text.find("-----BEGIN ", pos)
        if begin < 0:
            return
        pos = begin + 11
        m = _PEM_FULL_RE.match(text, begin)
        if m is None:
            m = _PEM_CUT_RE.match(text, begin)
            if m is None or sum(map(len, _BASE64_RUN_RE.findall(m.group("body")))) < _PEM_MIN_BODY:
                continue
            end = m.end()
        else:
            end = m.end()
        yield begin, end, "private_key"
        pos = end


def _find_url_credentials(text: str) -> Iterator[_Span]:
    for m in _URL_CRED_RE.finditer(text):
        i = m.start()
        floor = max(0, i - 32)
        while i > floor and text[i - 1] in _SCHEME_CHARS:
            i -= 1
        if i == m.start() or not text[i].isalpha():
            continue
        user, pw = m.group("user"), m.group("pw")
        if pw == user or _NUMBER_RE.fullmatch(pw) or _placeholder(pw, pw.lower()):  # numbers: host:port
            continue
        yield m.start("pw"), m.end("pw"), "connection_string"


def _find_emails(text: str) -> Iterator[_Span]:
    floor = 0  # never reach into the previous address
    for m in _EMAIL_RE.finditer(text):
        at, end = m.span()
        start, lo = at, max(floor, at - 65)
        while start > lo and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        while start < at and text[start] == ".":
            start += 1
        if at - start > 64 or (start == lo and lo > floor and text[lo - 1] in _EMAIL_LOCAL_CHARS):
            continue  # a local part longer than 64 characters: not an address
        local, domain = text[start:at].lower(), m.group()[1:].lower()
        if not local or local[-1] == "." or domain[domain.rfind(".") + 1 :] in _FILE_TLDS:
            continue
        if local.startswith("redacted_"):  # a placeholder in "scheme://user:REDACTED_...@host"
            continue
        if local in _KEEP_EMAIL_LOCALS or domain in _KEEP_EMAIL_DOMAINS or domain.endswith(_KEEP_EMAIL_SUFFIXES):
            continue
        floor = end
        yield start, end, "email"


def _find_ipv4(text: str) -> Iterator[_Span]:
    public = _PUBLIC_IPV4_RE.fullmatch
    for m in _IPV4_TAIL_RE.finditer(text):
        dot, end = m.span()
        start = dot
        while start > dot - 3 and start > 0 and text[start - 1] in _DIGITS:
            start -= 1
        if start == dot or (
            start > 0 and (text[start - 1] == "." or text[start - 1].isalnum() or text[start - 1] == "_")
        ):
            continue
        address = text[start:end]
        if public(address) is None or address in _PUBLIC_RESOLVERS:
            continue
        line_start = text.rfind("\n", max(0, start - 48), start) + 1
        if _VERSION_BEFORE_RE.search(text, max(line_start, start - 48), start):
            continue
        yield start, end, "ip_address"


def _find_assignments(text: str, kinds: frozenset[str]) -> Iterator[_Span]:
    lowered = text.lower()
    patterns = _ASSIGN_RES
    if len(lowered) != len(text):  # a few non-ASCII characters lower-case to two
        lowered, patterns = text, _ASSIGN_RES_I
    seen: set[int] = set()  # value starts already decided
    for pattern in patterns:
        for m in pattern.finditer(lowered):
            group = m.lastgroup  # dq, sq, bq or uv: the value (the groups before it close earlier)
            vstart = m.start(group)
            if vstart in seen:
                continue
            seen.add(vstart)
            span = _assignment(text, lowered, m, group, kinds)
            if span is not None:
                yield span


def _assignment(text: str, lowered: str, m: re.Match[str], group: str, kinds: frozenset[str]) -> _Span | None:
    """The value span of a secret assignment (with its kind), or None."""
    vstart, vend = m.span(group)
    quoted = group != "uv"
    if not quoted and (vend - vstart >= 256 or m.group("call") is not None or m.group("type") is not None):
        return None  # too long, or an expression: .password(x), const P: &str = OTHER
    value = text[vstart:vend]
    long_base64 = vend - vstart >= 40 and _BASE64_RE.fullmatch(value) is not None
    low = lowered[vstart:vend].lower()
    if not long_base64 and _placeholder(value, low):
        return None
    name_start = m.start()
    floor = max(0, name_start - 80)
    while name_start > floor and text[name_start - 1] in _NAME_CHARS:
        name_start -= 1
    words = _words(text[name_start : m.end("rest")])
    kind = _assignment_kind(words, value, kinds)
    if kind is None:
        return None
    if kind == "aws_secret_key" or (kind == "azure_key" and long_base64):
        return vstart, vend, kind
    if words[-1] in _DENY_LAST or words[0] in _DENY_FIRST:
        return None
    strong = _PASSWORD_WORDS.isdisjoint(words)
    return (vstart, vend, kind) if _plausible_value(text, name_start, m, value, low, quoted, strong) else None


def _assignment_kind(words: list[str], value: str, kinds: frozenset[str]) -> str | None:
    """The first enabled kind the name (as words) and value qualify for, or None."""
    if not words:
        return None
    wordset = set(words)
    secretish = not wordset.isdisjoint(_PASSWORD_WORDS) or not wordset.isdisjoint(_TOKEN_WORDS)
    if not secretish and "key" in wordset:
        secretish = any(w == "key" and i > 0 and words[i - 1] in _KEY_QUALIFIERS for i, w in enumerate(words))
    if (
        "aws_secret_key" in kinds
        and ("aws" in wordset or "secret" in wordset)
        and _AWS_SECRET_RE.fullmatch(value)
        and _HEX_RE.fullmatch(value) is None
        and _char_classes(value) >= 3
        and value != value.lower()
    ):
        return "aws_secret_key"
    if "azure_key" in kinds:
        if "azure" in wordset and (secretish or "key" in wordset or "sas" in wordset):
            return "azure_key"
        if ("storage" in wordset or "account" in wordset) and "key" in wordset and _BASE64_RE.fullmatch(value):
            return "azure_key"
    return "password" if secretish and "password" in kinds else None


def _random_looking(value: str) -> bool:
    """8+ characters with letters and digits, or 16+ of mixed case that are not CamelCase words."""
    if len(value) < 8 or value.isdigit():
        return False
    if _DIGIT_RE.search(value):
        return value.upper() != value.lower()  # some letter
    return len(value) >= 16 and value != value.lower() and value != value.upper() and not _WORDY_RE.fullmatch(value)


def _plausible_value(
    text: str, name_start: int, m: re.Match[str], value: str, low: str, quoted: bool, strong: bool
) -> bool:
    """Whether an assigned value looks like a real secret, not a placeholder, type or reference.

    ``strong`` (names with only token/key/pass/pwd words) asks for a random-looking value.
    """
    if low in _NON_VALUES or (strong and not _random_looking(value)):
        return False
    if _SPACE_RE.search(value) or _ENV_NAME_RE.fullmatch(value) or _VERSION_RE.fullmatch(value):
        return False
    if _NUMBER_RE.fullmatch(value):
        return quoted and not strong and len(value) >= 6  # a PIN-like password, not a count
    if quoted:
        return True
    # Unquoted: no YAML sigils or references (config.password, self.token); then identifiers.
    if value[0] in _YAML_SIGILS or _REFERENCE_RE.fullmatch(value):
        return False
    if not _IDENT_RE.fullmatch(value):
        return True  # symbols in it: a literal, not an identifier
    sep = m.group("sep") or ""
    if sep.startswith(":") and _CAMEL_TYPE_RE.fullmatch(value):
        return False  # password: SecretString / token: Sha256 -- a type
    if _DIGIT_RE.search(value):
        return True  # letters and digits: hunter2, s3cret_42
    return _config_line(text, name_start, m)


def _config_line(text: str, name_start: int, m: re.Match[str]) -> bool:
    """An unquoted plain-identifier value counts only in config syntax that cannot be code."""
    # Bounded windows: a line prefix or suffix longer than 64 characters is not empty anyway.
    lo = max(0, name_start - 64)
    line_start = text.rfind("\n", lo, name_start)
    before = text[line_start + 1 if line_start >= 0 else lo : name_start].strip()
    if line_start < 0 and lo > 0:
        before = before or "..."  # indentation deeper than the window: treat as code
    end = m.end()
    line_end = text.find("\n", end, end + 64)
    after = text[end : line_end if line_end >= 0 else end + 64].strip()
    sep = m.group("sep") or ""
    if sep == ":":  # YAML: "key: value" alone on its line (a list item "- key: value" too)
        return before in ("", "-") and (after == "" or after.startswith("#"))
    if sep == "=" and not (m.group("pre") or m.group("post")):
        if before in ("", "export") and after == "":
            return True  # env / ini / properties line
        return text[m.end() : m.end() + 1] in (";", "&")  # ADO.NET "Password=x;", query "token=x&"
    return False


def _unknown_kind_message(kind: str) -> str:
    return f"unknown redaction kind {kind!r}; valid kinds: {', '.join(KINDS)}"


@dataclass
class RedactConfig:
    """Redaction settings; ``ip_addresses``/``emails`` switch those two kinds off."""

    enabled: bool = True
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    ip_addresses: bool = True
    emails: bool = True

    def validate(self) -> None:
        """Raise :class:`CommitforgeError` naming the first unknown kind and listing the valid ones."""
        for kind in self.kinds:
            if kind not in _PRIORITY:
                raise CommitforgeError(f"redact.kinds: {_unknown_kind_message(kind)}")

    def effective_kinds(self) -> list[str]:
        """``kinds`` without ``email``/``ip_address`` when those are off; nothing when disabled."""
        if not self.enabled:
            return []
        off = {k for k, on in (("email", self.emails), ("ip_address", self.ip_addresses)) if not on}
        return [k for k in self.kinds if k not in off]

    def redactor(self, key: bytes = b"commitforge") -> Redactor | None:
        """A :class:`Redactor` for these (validated) settings, or ``None`` when nothing is redacted."""
        self.validate()
        kinds = self.effective_kinds()
        return Redactor(kinds, key=key) if kinds else None
