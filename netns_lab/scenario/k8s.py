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

_dns1123_label = re.compile(f"^{DNS1123_LABEL_FMT}$")
_dns1123_subdomain = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}$")
_dns1035_label = re.compile(f"^{DNS1035_LABEL_FMT}$")
_label_value = re.compile(f"^{_LABEL_VALUE_FMT}$")
_qualified_name = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_iana_svc_name = re.compile("^[-a-z0-9]+$")
_has_letter = re.compile("[a-z]")


def _max_len(value: str, n: int) -> list[str]:
    return [f"must be no more than {n} characters"] if len(value) > n else []


def dns1123_label(value: str) -> list[str]:
    errs = _max_len(value, 63)
    if not _dns1123_label.match(value):
        errs.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
            f"regex used for validation is '{DNS1123_LABEL_FMT}')"
        )
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = _max_len(value, 253)
    if not _dns1123_subdomain.match(value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
            f"regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"
        )
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = _max_len(value, 63)
    if not _dns1035_label.match(value):
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
    if not _iana_svc_name.match(value):
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
    if not _label_value.match(value):
        errs.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE_FMT}')"
        )
    return errs


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: optional DNS-subdomain prefix, '/', a name of 63 at most."""
    prefix, sep, name = value.rpartition("/")
    errs: list[str] = []
    if sep and not prefix:
        return ["prefix part must be non-empty"]
    if prefix:
        errs += [f"prefix part {e}" for e in dns1123_subdomain(prefix)]
    if not name:
        return errs + ["name part must be non-empty"]
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _qualified_name.match(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
            f"used for validation is '{_QUALIFIED_NAME_FMT}')"
        )
    return errs
