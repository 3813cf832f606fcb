"""The appliance stores no patient identity: the one check every label, free-text field and field name passes,
and the content hash that stands in for a file name wherever a video source is reported.

A text is accepted when it is 1 to ``MAX_TEXT`` characters of ``ALLOWED`` (ASCII letters, digits, space and
``. , _ - + ( ) /``) and does not look like identity:
- a person's name in DICOM form (``DOE^JOHN``): any ``^`` (also outside the character set, refused by name);
- an MRN, accession or other record number: 6 or more digits in a run, counting across separators
  (``00412345``, ``004 123 45``, ``004-12-345``, ``004.123/45``, ``(004)12345``, ``004 . 123 - 45``): up to
  three of space ``. / _ - + ( )`` between digit groups join them, and so does a thousands comma (``412,345``);
  a word of digits and the lookalike letters O, o, I, l reads as digits (``OO4l2345``). ``10-12 mm`` and
  ``pass 2 - 3`` stay labels: too few digits;
- a date: ``1957-03-14``, ``14.03.1957``, ``14/03/57``, ``03/14/1957``, ``19570314`` (a digit run), ``14 Mar
  1957``, ``Mar 14 1957``, ``March 1957``, ``3rd March``, ``14-III-1957`` (a Roman month), ``3 14 57``: three
  numeric parts joined by ``. / -`` (or by spaces when they read as day, month and two-digit year), or a month
  name next to a number;
- an identity word: patient, name, surname, birth, born, address, phone, email, insurance, accession (and words starting
  with them), dob, mrn, ssn, acc (whole words, digits may follow: ``MRN00412345``; dotted or spaced: ``D.O.B``).
ASCII only, on purpose: fullwidth digits or a lookalike caret would slip past the patterns above.

What no pattern can tell from a label: a plain name (``Doe John``, ``DOE,JOHN``), a year alone (``1957``) and a
day and month without a year in digits (``14/03``); docs/privacy.md says so.

A refusal raises ``IdentityRefused`` (a ValueError; the API answers it 422) whose message names the rule, never
the refused text, so the message itself is safe to log.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

MAX_TEXT = 40
ALLOWED = "ASCII letters, digits, space and . , _ - + ( ) /"
_ALLOWED_RE = re.compile(r"[A-Za-z0-9 .,_+()/-]*")
# Digit groups joined by up to three separators count as one number (an MRN typed as "004 123 45", "(004)123-45").
_DIGIT_RUN_RE = re.compile(r"\d(?:[ ._/+()-]{0,3}\d){5,}")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A word of digits and letters that pass for digits (O for 0, I or l for 1) is a number typed to slip through.
_LOOKALIKE_WORD_RE = re.compile(r"(?<![A-Za-z0-9])(?=[OoIl]*\d)[0-9OoIl]+(?![A-Za-z0-9])")
_LOOKALIKE_DIGITS = str.maketrans("OoIl", "0011")
_MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|august"
           "|september|october|november|december")
_ROMAN_MONTH = "(?:i{1,3}|iv|vi{0,3}|ix|xi{0,2})"
_DATE_RES = (
    re.compile(r"\d{1,4}\s*[./-]\s*\d{1,2}\s*[./-]\s*\d{1,4}"),               # ISO, dd.mm.yyyy, mm/dd/yy ...
    re.compile(rf"\d{{1,4}}(?:st|nd|rd|th)?[ ./-]*(?:of[ ]+)?(?:{_MONTHS})(?![a-z])", re.IGNORECASE),  # 14 Mar, 3rd of March
    re.compile(rf"(?<![a-z])(?:{_MONTHS})[ ./,-]*\d{{1,4}}", re.IGNORECASE),    # Mar 14, March 1957
    # A Roman month: 14-III-1957, 14.III.57; with spaces only before a full year ("4 x 10 ml" is no date).
    re.compile(rf"(?<![a-z0-9])(?:\d{{1,2}}|[ivx]{{1,5}})(?: *[./-] *{_ROMAN_MONTH} *[./-] *\d{{2,4}}"
               rf"| +{_ROMAN_MONTH} +(?:19|20)\d\d)(?!\d)", re.IGNORECASE),
)
# Day, month and a two-digit year with spaces only ("3 14 57"); a four-digit year is already 6+ digits.
_SPACED_DATE_RE = re.compile(r"(?<![\d.,/-])(\d{1,2}) +(\d{1,2}) +(\d{2})(?![\d.,/-])")
_PREFIX_WORDS = ("patient", "name", "surname", "birth", "born", "address", "phone", "email", "insurance", "accession")
_WHOLE_WORDS = ("dob", "mrn", "ssn", "acc")
# Word starts: underscores and digits separate words too (field names are snake_case, MRN00412345).
_WORD_RE = re.compile(rf"(?<![a-z])(?:{'|'.join(_PREFIX_WORDS)}|(?:{'|'.join(_WHOLE_WORDS)})(?![a-z]))",
                      re.IGNORECASE)
_SPELT_WORD_RE = re.compile(r"(?<![a-z])(?:d[ .]o[ .]b|m[ .]r[ .]n|s[ .]s[ .]n)(?![a-z])", re.IGNORECASE)


class IdentityRefused(ValueError):
    """A text the appliance will not store: too long, outside the character set, or looking like identity."""


def check_text(value, what: str = "label", *, max_len: int = MAX_TEXT) -> str:
    """Return ``value`` unchanged if the appliance may store it; raise ``IdentityRefused`` naming the rule."""
    if not isinstance(value, str):
        raise IdentityRefused(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise IdentityRefused(f"{what} must not be empty")
    if len(value) > max_len:
        raise IdentityRefused(f"{what} is longer than {max_len} characters")
    if "^" in value:
        raise IdentityRefused(f"{what} looks like a person's name in DICOM form (contains '^'); "
                              "the appliance stores no patient identity")
    if not _ALLOWED_RE.fullmatch(value):
        raise IdentityRefused(f"{what} must be a single-line text of {ALLOWED} only")
    if any(r.search(value) for r in _DATE_RES) or any(_plausible_date(*m.groups())
                                                        for m in _SPACED_DATE_RE.finditer(value)):
        raise IdentityRefused(f"{what} contains a date; the appliance stores no patient identity")
    digits = _LOOKALIKE_WORD_RE.sub(lambda m: m.group(0).translate(_LOOKALIKE_DIGITS), value)
    if _DIGIT_RUN_RE.search(_THOUSANDS_RE.sub("", digits)):
        raise IdentityRefused(f"{what} contains 6 or more digits in a row, like a record or accession number; "
                              "the appliance stores no patient identity")
    word = _WORD_RE.search(value) or _SPELT_WORD_RE.search(value)
    if word:
        spelt = re.sub(r"[ .]", "", word.group(0)).lower()
        raise IdentityRefused(f"{what} contains the identity word {spelt!r}; "
                              "the appliance stores no patient identity")
    return value


def _plausible_date(first: str, second: str, year: str) -> bool:
    day_month = int(first) <= 31 and 1 <= int(second) <= 12
    month_day = 1 <= int(first) <= 12 and int(second) <= 31
    return (day_month or month_day) and min(int(first), int(second)) >= 1


def check_optional(value, what: str = "label", *, max_len: int = MAX_TEXT) -> str | None:
    return None if value is None else check_text(value, what, max_len=max_len)


HASH_HEAD_BYTES = 4 * 2**20


def content_label(path: str | Path, head_bytes: int = HASH_HEAD_BYTES) -> str:
    """What stands for a video file in events, log lines and status: ``sha256:`` and 16 hex digits of the
    file's size and first ``head_bytes``. File names often carry the patient (``DOE^JOHN_MRN..._XA.dcm``);
    a hash of the contents still tells two recordings apart and finds the file again on the machine it came
    from. A folder is hashed over its files' labels in name order. Unreadable: ``unreadable``."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
                digest.update(content_label(child, head_bytes=min(head_bytes, 2**20)).encode())
        else:
            with open(path, "rb") as fh:
                digest.update(str(path.stat().st_size).encode() + b"\0")
                digest.update(fh.read(head_bytes))
    except OSError:
        return "unreadable"
    return f"sha256:{digest.hexdigest()[:16]}"
