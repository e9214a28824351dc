"""The API server's validation rules and its exact wording (apimachinery validation).

Users paste real manifests and search the web for error messages, so the lab answers in
the words ``kubectl apply`` would use.
"""

from __future__ import annotations

import re

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_LABEL_VALUE_FMT = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

C_IDENTIFIER_FMT = "[A-Za-z_][A-Za-z0-9_]*"

# Every pattern is applied with ``fullmatch``: Python's ``$`` also matches before a trailing
# newline, so ``^...$`` with ``match`` would accept "name\n" (Go's regexp does not).
_dns1123_label = re.compile(DNS1123_LABEL_FMT)
_dns1123_subdomain = re.compile(DNS1123_SUBDOMAIN_FMT)
_dns1035_label = re.compile(DNS1035_LABEL_FMT)
_label_value = re.compile(_LABEL_VALUE_FMT)
_qualified_name = re.compile(_QUALIFIED_NAME_FMT)
_c_identifier = re.compile(C_IDENTIFIER_FMT)
_iana_svc_name = re.compile("[-a-z0-9]+")
_has_letter = re.compile("[a-z]")
_ascii_digits = re.compile("[0-9]+")


def _max_len(value: str, n: int) -> list[str]:
    return [f"must be no more than {n} characters"] if len(value) > n else []


def dns1123_label(value: str) -> list[str]:
    errs = _max_len(value, 63)
    if not _dns1123_label.fullmatch(value):
        errs.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
            f"regex used for validation is '{DNS1123_LABEL_FMT}')"
        )
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = _max_len(value, 253)
    if not _dns1123_subdomain.fullmatch(value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
            f"regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"
        )
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = _max_len(value, 63)
    if not _dns1035_label.fullmatch(value):
        errs.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
            "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
            f"'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"
        )
    return errs


def port_num(value: int) -> list[str]:
    return [] if 1 <= value <= 65535 else ["must be between 1 and 65535, inclusive"]


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME, as for containerPort and Service port names."""
    errs: list[str] = _max_len(value, 15)
    if not _iana_svc_name.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not _has_letter.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def label_value(value: str) -> list[str]:
    errs = _max_len(value, 63)
    if not _label_value.fullmatch(value):
        errs.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE_FMT}')"
        )
    return errs


_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
    f"is '{_QUALIFIED_NAME_FMT}')"
)


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: an optional DNS-subdomain prefix and '/', then a name of 63 at most.

    Label and annotation keys, ``appProtocol``, ``loadBalancerClass``: the same rule and the
    same messages as apimachinery, including "a qualified name ..." for two or more slashes.
    """
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += [f"prefix part {e}" for e in dns1123_subdomain(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _qualified_name.fullmatch(name):
        errs.append(f"name part {_QUALIFIED_NAME_MSG}")
    return errs


def c_identifier(value: str) -> list[str]:
    """IsCIdentifier: the names kubelet gives the Service environment variables it sets."""
    if _c_identifier.fullmatch(value):
        return []
    return [
        "a valid C identifier must start with alphabetic character or '_', followed by a string of "
        "alphanumeric characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName', regex used for "
        f"validation is '{C_IDENTIFIER_FMT}')"
    ]


def host_name(value: str) -> list[str]:
    """A name a resolver can look up: a DNS-1123 subdomain whose labels fit in DNS (63 octets each).

    IsDNS1123Subdomain bounds only the whole name (253); a longer label is not a name any
    resolver sends, so a check naming one could never mean anything.
    """
    errs = dns1123_subdomain(value)
    long = next((label for label in value.split(".") if len(label) > 63), None)
    if long is not None:
        errs.append(f"each label must be no more than 63 characters (one has {len(long)})")
    return errs


def ascii_int(text: str, max_digits: int = 5) -> int | None:
    """The number ``text`` spells in ASCII digits only, or None.

    ``int()`` also reads "٨٠" (Arabic-Indic digits), " 80", "+80" and "8_0" as 80, and raises
    on more than 4300 digits; a number in a scenario is plain ASCII digits, and a short one.
    """
    if len(text) > max_digits or not _ascii_digits.fullmatch(text):
        return None
    return int(text)
