"""UrlPolicy and GuardedResolver: which URLs and addresses a download may reach."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from src.infrastructure.http.url_guard import GuardedResolver, UnsafeUrl, UrlPolicy

STRICT = UrlPolicy()


def refusal(policy: UrlPolicy, address: str, host: str | None = None) -> str | None:
    try:
        policy.check_address(address, host=host)
    except UnsafeUrl as err:
        return err.rule
    return None


def url_refusal(policy: UrlPolicy, url: str) -> str | None:
    try:
        policy.check_url(url)
    except UnsafeUrl as err:
        return err.rule
    return None


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback-address"),
        ("127.5.6.7", "loopback-address"),
        ("::1", "loopback-address"),
        ("10.0.0.1", "private-address"),
        ("172.16.3.4", "private-address"),
        ("192.168.1.1", "private-address"),
        ("100.64.0.1", "private-address"),
        ("fc00::1", "private-address"),
        ("fd12:3456::1", "private-address"),
        ("fec0::1", "private-address"),
        ("169.254.169.254", "metadata-address"),
        ("169.254.170.2", "metadata-address"),
        ("fd00:ec2::254", "metadata-address"),
        ("169.254.1.1", "link-local-address"),
        ("fe80::1", "link-local-address"),
        ("fe80::1%eth0", "link-local-address"),
        ("224.0.0.1", "multicast-address"),
        ("239.255.255.250", "multicast-address"),
        ("ff02::1", "multicast-address"),
        ("0.0.0.0", "unspecified-address"),
        ("::", "unspecified-address"),
        ("240.0.0.1", "reserved-address"),
        ("255.255.255.255", "reserved-address"),
        ("::127.0.0.1", "reserved-address"),  # deprecated IPv4-compatible form
        ("192.0.2.1", "private-address"),  # documentation: never a real file server
        ("not-an-address", "invalid-address"),
    ],
)
def test_non_public_addresses_are_refused_by_rule(address: str, rule: str) -> None:
    assert refusal(STRICT, address) == rule


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("::ffff:127.0.0.1", "loopback-address"),
        ("::ffff:10.0.0.1", "private-address"),
        ("::ffff:169.254.169.254", "metadata-address"),
        ("64:ff9b::a9fe:a9fe", "metadata-address"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback-address"),
        ("2002:7f00:1::", "loopback-address"),  # 6to4 of 127.0.0.1
    ],
)
def test_ipv6_forms_of_ipv4_addresses_are_judged_as_the_ipv4_address(address, rule) -> None:
    assert refusal(STRICT, address) == rule


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(STRICT, address) is None


def test_allowed_networks_let_their_addresses_through_and_nothing_else() -> None:
    policy = UrlPolicy.from_setting(" 127.0.0.1/32, 10.1.0.0/16 ,::1, ")

    assert refusal(policy, "127.0.0.1") is None
    assert refusal(policy, "::ffff:127.0.0.1") is None
    assert refusal(policy, "::1") is None
    assert refusal(policy, "10.1.200.3") is None
    assert refusal(policy, "127.0.0.2") == "loopback-address"
    assert refusal(policy, "10.2.0.1") == "private-address"
    assert refusal(policy, "169.254.169.254") == "metadata-address"


def test_an_allowed_metadata_network_is_an_explicit_choice() -> None:
    assert refusal(UrlPolicy.from_setting("169.254.169.254"), "169.254.169.254") is None


def test_allowed_host_name_may_resolve_to_private_addresses_but_not_to_metadata() -> None:
    policy = UrlPolicy.from_setting("Files.Internal.")

    assert policy.allowed_hosts == frozenset({"files.internal"})
    assert refusal(policy, "10.0.0.7", host="files.internal") is None
    assert refusal(policy, "127.0.0.1", host="FILES.internal.") is None
    assert refusal(policy, "169.254.169.254", host="files.internal") == "metadata-address"
    assert refusal(policy, "10.0.0.7", host="other.internal") == "private-address"
    assert refusal(policy, "10.0.0.7") == "private-address"


@pytest.mark.parametrize("setting", ["not a host", "10.0.0.0/33x", "exa_mple..com", "a/b"])
def test_malformed_allow_list_entries_are_configuration_errors(setting: str) -> None:
    with pytest.raises(ValueError, match="not a host or network"):
        UrlPolicy.from_setting(setting)


def test_empty_setting_allows_nothing() -> None:
    assert UrlPolicy.from_setting("") == UrlPolicy.from_setting(" , ") == STRICT


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/file.bin", "scheme-not-allowed"),
        ("file:///etc/passwd", "scheme-not-allowed"),
        ("gopher://example.com:70/_", "scheme-not-allowed"),
        ("example.com/no-scheme", "scheme-not-allowed"),
        ("javascript:alert(1)", "scheme-not-allowed"),
        ("https://user:secret@example.com/f", "userinfo-not-allowed"),
        ("https://user@example.com/f", "userinfo-not-allowed"),
        ("http:///path-only", "missing-host"),
        ("http://127.0.0.1:8080/x?X-Amz-Signature=s", "loopback-address"),
        ("http://[::1]/x", "loopback-address"),
        ("http://[::ffff:127.0.0.1]/x", "loopback-address"),
        ("http://169.254.169.254/latest/meta-data/", "metadata-address"),
        ("http://[fd00:ec2::254]/latest", "metadata-address"),
        ("http://10.0.0.1/x", "private-address"),
        ("http://0.0.0.0:80/", "unspecified-address"),
        ("http://[fe80::1%25eth0]/", "link-local-address"),
        ("http://2130706433/", "loopback-address"),
        ("http://0x7f.1/", "loopback-address"),
        ("http://017700000001/", "loopback-address"),
        ("http://127.1/", "loopback-address"),
        ("http://0/", "unspecified-address"),
        ("http://134744072/", "non-canonical-address"),  # 8.8.8.8, but aiohttp refuses it
        ("http://127.0.0.1.:80/", "non-canonical-address"),
    ],
)
def test_urls_are_refused_by_rule(url: str, rule: str) -> None:
    assert url_refusal(STRICT, url) == rule


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.amazonaws.com/exports/f.csv?X-Amz-Signature=abc",
        "HTTP://Example.COM:8443/a",
        "http://8.8.8.8/x",
        "http://[2606:4700::1111]/x",
        "http://bad.cafe/hex-looking-name",
        "http://localhost/resolved-and-checked-later",
    ],
)
def test_http_and_https_urls_with_names_or_public_addresses_pass(url: str) -> None:
    assert url_refusal(STRICT, url) is None


def test_allow_listed_literal_passes() -> None:
    policy = UrlPolicy.from_setting("127.0.0.1/32")
    assert url_refusal(policy, "http://127.0.0.1:8081/files/x?sig=1") is None
    assert url_refusal(policy, "http://2130706433/") == "non-canonical-address"


def test_redirects_are_resolved_against_the_current_url_and_checked() -> None:
    current = STRICT.check_url("https://files.example.com/a/b?X-Amz-Signature=1")

    assert str(STRICT.check_redirect(current, "c")) == "https://files.example.com/a/c"
    assert str(STRICT.check_redirect(current, "//cdn.example.com/x")) == "https://cdn.example.com/x"
    for location, rule in [
        ("http://169.254.169.254/latest/meta-data/", "metadata-address"),
        ("//10.0.0.1/x", "private-address"),
        ("ftp://files.example.com/x", "scheme-not-allowed"),
    ]:
        with pytest.raises(UnsafeUrl) as refused:
            STRICT.check_redirect(current, location)
        assert refused.value.rule == rule


def test_rule_never_holds_the_url() -> None:
    with pytest.raises(UnsafeUrl) as refused:
        STRICT.check_url("http://10.0.0.1/f?X-Amz-Signature=topsecret")
    assert str(refused.value) == refused.value.rule == "private-address"


class StubResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_guarded_resolver_returns_exactly_the_checked_addresses() -> None:
    inner = StubResolver({"files.test": ["93.184.216.34", "93.184.216.35"]})
    resolver = GuardedResolver(STRICT, inner)

    results = await resolver.resolve("files.test", 443)

    assert [(r["host"], r["port"]) for r in results] == [
        ("93.184.216.34", 443),
        ("93.184.216.35", 443),
    ]
    await resolver.close()
    assert inner.closed


@pytest.mark.parametrize(
    ("answers", "rule"),
    [
        (["127.0.0.1"], "loopback-address"),
        (["93.184.216.34", "10.0.0.1"], "private-address"),  # one bad address refuses all
        (["169.254.169.254"], "metadata-address"),
        ([], "unresolvable-host"),
    ],
)
async def test_guarded_resolver_refuses_a_host_with_any_unsafe_address(answers, rule) -> None:
    resolver = GuardedResolver(STRICT, StubResolver({"evil.test": answers}))

    with pytest.raises(UnsafeUrl) as refused:
        await resolver.resolve("evil.test", 80)

    assert refused.value.rule == rule


async def test_guarded_resolver_reports_unknown_names_and_passes_other_dns_errors() -> None:
    resolver = GuardedResolver(STRICT, StubResolver({}))
    with pytest.raises(UnsafeUrl) as refused:
        await resolver.resolve("nowhere.test", 80)
    assert refused.value.rule == "unresolvable-host"

    class Flaky(StubResolver):
        async def resolve(self, host, port=0, family=socket.AF_INET):
            raise socket.gaierror(socket.EAI_AGAIN, "try again")

    with pytest.raises(socket.gaierror):  # transient: aiohttp makes it a retryable error
        await GuardedResolver(STRICT, Flaky({})).resolve("files.test", 80)
