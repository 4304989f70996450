"""PII redaction of decision traces before they are digested and signed.

Three passes over any JSON value (dicts, lists, strings, numbers):

1. **Key names.** A value under a personal key (``email``, ``phone``, ``name``,
   ``address``, ``birthDate``, ``ip``, ``customerId`` … compared without case or
   punctuation) is replaced whole, whatever its type, by a typed marker.
2. **Known values.** Every string removed in pass 1 (and, for names, each word
   of it) is also removed wherever else it occurs, e.g. a customer's name
   repeated in a free-text note.
3. **Value detectors** over every remaining string and every dict key:
   e-mail addresses, IBANs (mod-97 checked), payment card numbers (13-19
   digits, Luhn checked), IPv6 and IPv4 addresses (parsed), phone numbers
   (international ``+``/``00`` form, national form with a leading 0, and the
   North American ``(555) 123-4567`` form). Integers are checked as card numbers.

A redacted value becomes ``[REDACTED:<type>]``: never a hash, which for
low-entropy values (phone numbers, birth dates) could be reversed by trying
every candidate. The passes err towards removing: a Luhn-valid 13-19 digit
number that is not a card is removed too.

Limits: names and street addresses in free text are only found when the same
value also appears under a personal key (there is no named-entity recogniser).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MARKER = "[REDACTED:{}]"

# Normalised key name (lower case, letters and digits only) -> marker type.
_KEY_NAMES = {
    "email": "email emailaddress mail emails",
    "phone": "phone phonenumber mobile mobilenumber mobilephone tel telephone msisdn fax cell "
    "cellphone phones",
    "name": "name firstname lastname fullname givenname familyname surname middlename maidenname "
    "displayname customername username",
    "address": "address streetaddress street addressline addressline1 addressline2 homeaddress "
    "postaladdress billingaddress shippingaddress postcode postalcode zip zipcode",
    "birth_date": "birthdate dateofbirth dob birthday",
    "national_id": "ssn socialsecuritynumber nationalid nationalidnumber passport passportnumber "
    "taxid tin driverslicense driverlicense",
    "card_number": "cardnumber creditcard creditcardnumber pan card",
    "iban": "iban bankaccount accountnumber",
    "ip_address": "ip ipaddress ipv4 ipv6 clientip remoteaddr remoteip",
    "customer_id": "customerid subjectid userid personid",
    "geo_location": "latitude longitude geolocation gps",
}
_KEY_TYPES = {name: kind for kind, names in _KEY_NAMES.items() for name in names.split()}

_NON_ALNUM = re.compile(r"[^a-z0-9]")
# Every detector needs one of these characters somewhere in the string.
_INTERESTING = re.compile(r"[\d@:]")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# Country code, check digits, then 11-30 alphanumerics, optionally in groups.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,34}")
_DIGIT_RUN = re.compile(r"\d(?:[ \-]?\d)*")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%]*")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d])")
# ISO 8601 dates and times are kept whole: their digit groups look like phone numbers.
_DATE_TIME = re.compile(
    r"(?<!\d)\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
    r"(?:Z|[+\-]\d{2}(?::?\d{2})?)?)?(?!\d)"
    r"|(?<![\d:])\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?!\d)"
)
# (pattern, fewest digits, most digits): E.164 allows 15 digits, plus a "00" prefix.
_PHONES = (
    # International: + or 00, then 7-15 digits with separators.
    (re.compile(r"(?<![\w+])(?:\+|00)\s?[1-9](?:[ .\-/()]{0,2}\d){6,14}(?!\d)"), 7, 17),
    # National with a trunk prefix 0, e.g. 06 12 34 56 78, (030) 1234 5678.
    (re.compile(r"(?<![\w])\(?0\d{1,4}\)?(?:[ .\-/]{0,2}\d{2,4}){2,5}(?!\d)"), 7, 15),
    # North American: (555) 123-4567, 555.123.4567.
    (re.compile(r"(?<![\w])\(?[2-9]\d{2}\)?[ .\-]{0,2}\d{3}[ .\-]\d{4}(?!\d)"), 10, 10),
)


def marker(kind: str) -> str:
    return MARKER.format(kind)


def key_type(key: str) -> str | None:
    """The marker type of a personal key name, or None."""
    # No cache on purpose: keys can themselves be personal data.
    lowered = key.lower()
    plain = lowered.isascii() and lowered.isalnum()
    return _KEY_TYPES.get(lowered if plain else _NON_ALNUM.sub("", lowered))


# --- checksums ---------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without separators."""
    text = compact.upper()
    if not 15 <= len(text) <= 34 or not text[:2].isalpha() or not text[2:4].isdigit():
        return False
    if not text.isalnum() or not text.isascii():
        return False
    rearranged = text[4:] + text[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# --- detectors: each returns the text with its findings replaced --------------

Span = tuple[int, int]


def _replace_spans(text: str, spans: list[Span], kind: str) -> str:
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(marker(kind))
        last = end
    out.append(text[last:])
    return "".join(out)


def _emails(text: str) -> str:
    return _EMAIL.sub(marker("email"), text) if "@" in text else text


def _ibans(text: str) -> str:
    spans: list[Span] = []
    for match in _IBAN.finditer(text):
        # The pattern is greedy and may swallow a following word: try shorter ends.
        positions = [i for i in range(match.start(), match.end()) if text[i].isalnum()]
        for count in range(min(len(positions), 34), 14, -1):
            compact = "".join(text[i] for i in positions[:count])
            if iban_valid(compact):
                spans.append((match.start(), positions[count - 1] + 1))
                break
    return _replace_spans(text, spans, "iban")


def _digit_windows(text: str, start: int, end: int) -> Iterator[Span]:
    """Spans of Luhn-valid card numbers inside one run of digit groups, left to right.

    A card number is written as whole groups ("4111 1111 1111 1111", or one
    unbroken group), so candidates start and end at group boundaries: a digit
    string inside a longer unbroken number is not a card.
    """
    groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", text[start:end])]
    index = 0
    while index < len(groups):
        for last in range(len(groups) - 1, index - 1, -1):
            first_start, last_end = groups[index][0], groups[last][1]
            digits = re.sub(r"\D", "", text[start + first_start : start + last_end])
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                yield start + first_start, start + last_end
                index = last + 1
                break
        else:
            index += 1


def _cards(text: str) -> str:
    spans: list[Span] = []
    for match in _DIGIT_RUN.finditer(text):
        if sum(ch.isdigit() for ch in match.group()) >= 13:
            spans.extend(_digit_windows(text, match.start(), match.end()))
    return _replace_spans(text, spans, "card_number")


def _is_ipv6(candidate: str) -> bool:
    if candidate.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _find_ipv6(text: str, start: int, end: int) -> Span | None:
    # Neighbouring hex letters ("cafe2001:db8::1") join the candidate: trim up to
    # one group (4 characters) from either side before giving up.
    for left in range(start, min(start + 5, end)):
        for right in range(end, max(end - 5, left), -1):
            if _is_ipv6(text[left:right]):
                return left, right
    return None


def _ipv6(text: str) -> str:
    if text.count(":") < 2:
        return text
    spans: list[Span] = []
    for match in _IPV6_CANDIDATE.finditer(text):
        span = _find_ipv6(text, match.start(), match.end())
        if span is not None:
            spans.append(span)
    return _replace_spans(text, spans, "ip_address")


def _ipv4(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        try:
            ipaddress.IPv4Address(match.group())
        except ValueError:
            return match.group()
        return marker("ip_address")

    return _IPV4.sub(replace, text)


def _phones(text: str) -> str:
    for pattern, fewest, most in _PHONES:

        def replace(match: re.Match[str], fewest: int = fewest, most: int = most) -> str:
            digits = sum(ch.isdigit() for ch in match.group())
            return marker("phone") if fewest <= digits <= most else match.group()

        text = pattern.sub(replace, text)
    return text


# Order matters: IBANs contain digits the later detectors would split.
_DETECTORS: tuple[Callable[[str], str], ...] = (_ibans, _cards, _ipv6, _ipv4, _phones)


def _detect(segment: str) -> str:
    for detector in _DETECTORS:
        segment = detector(segment)
    return segment


def redact_text(text: str) -> str:
    """Run every value detector over one string."""
    if _INTERESTING.search(text) is None:
        # Every detector needs a digit, an "@" or (IPv6) a ":": skip plain words fast.
        return text
    text = _emails(text)
    out, last = [], 0
    for match in _DATE_TIME.finditer(text):
        out.append(_detect(text[last : match.start()]))
        out.append(match.group())
        last = match.end()
    out.append(_detect(text[last:]))
    return "".join(out)


# --- the walk ------------------------------------------------------------------


@dataclass
class _Known:
    """Strings removed by key name, to be removed wherever else they occur."""

    values: dict[str, str] = field(default_factory=dict)  # lower-cased value -> type
    pattern: re.Pattern[str] | None = None

    def add(self, value: Any, kind: str) -> None:
        if isinstance(value, str):
            text = value.strip()
            if len(text) >= 3:
                self.values.setdefault(text.lower(), kind)
            if kind in {"name", "address"}:
                for word in re.findall(r"[^\W\d_]{3,}", text):
                    self.values.setdefault(word.lower(), kind)
        elif isinstance(value, dict):
            for item in value.values():
                self.add(item, kind)
        elif isinstance(value, list):
            for item in value:
                self.add(item, kind)

    def compile(self) -> None:
        if self.values:
            # Longest first, so "Alice Moreau" wins over "Alice".
            ordered = sorted(self.values, key=lambda v: (-len(v), v))
            alternatives = "|".join(re.escape(v) for v in ordered)
            # Markers already in the text are matched first and kept as they are.
            self.pattern = re.compile(
                rf"(\[REDACTED:[a-z_]+\])|(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE
            )

    def scrub(self, text: str) -> str:
        if self.pattern is None:
            return text

        def replace(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(1)
            return marker(self.values[match.group().lower()])

        return self.pattern.sub(replace, text)


def _collect(value: Any, known: _Known) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            kind = key_type(str(key))
            if kind is not None:
                known.add(item, kind)
            else:
                _collect(item, known)
    elif isinstance(value, list):
        for item in value:
            _collect(item, known)


def _scrub_string(text: str, known: _Known) -> str:
    # Detectors first: a known name inside an e-mail address must not break the
    # address apart before the e-mail detector sees it.
    return known.scrub(redact_text(text))


def _walk(value: Any, known: _Known) -> Any:
    if isinstance(value, dict):
        return _walk_dict(value, known)
    if isinstance(value, list):
        return [_walk(item, known) for item in value]
    if isinstance(value, str):
        return _scrub_string(value, known)
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(abs(value))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return marker("card_number")
    return value


def _walk_dict(value: dict[Any, Any], known: _Known) -> dict[str, Any]:
    result: dict[str, Any] = {}
    # Sorted, so colliding redacted keys are numbered the same way every time.
    for key in sorted(value, key=str):
        item = value[key]
        kind = key_type(str(key))
        new_key = _scrub_string(str(key), known)
        if new_key in result:
            suffix = 2
            while f"{new_key}#{suffix}" in result:
                suffix += 1
            new_key = f"{new_key}#{suffix}"
        result[new_key] = marker(kind) if kind is not None else _walk(item, known)
    return result


def redact(value: Any) -> Any:
    """A redacted deep copy of a JSON value (the input is not modified)."""
    known = _Known()
    _collect(value, known)
    known.compile()
    return _walk(value, known)
