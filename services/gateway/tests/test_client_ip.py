"""The client's address, as the limits see it: the direct peer unless that peer is a trusted
proxy; then X-Forwarded-For read from the right, skipping trusted proxies, so a client cannot
choose its address by sending the header itself."""

from __future__ import annotations

import pytest

from gateway_service.client_ip import client_ip, parse_networks

PROXIES = parse_networks("10.0.0.0/8, 192.168.1.5, fd00::/8")
CLIENT = "203.0.113.7"


def test_trusted_proxies_are_parsed_from_a_comma_separated_list() -> None:
    assert [str(network) for network in PROXIES] == ["10.0.0.0/8", "192.168.1.5/32", "fd00::/8"]
    assert parse_networks("") == []
    assert [str(network) for network in parse_networks(" 10.1.2.3/8 ,, ")] == ["10.0.0.0/8"]


def test_a_malformed_trusted_proxy_setting_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, proxy.internal")


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    assert client_ip(CLIENT, "1.2.3.4", []) == CLIENT
    assert client_ip("10.0.0.2", "1.2.3.4, 5.6.7.8", []) == "10.0.0.2"


def test_without_the_header_the_peer_is_the_client() -> None:
    assert client_ip("10.0.0.2", None, PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "", PROXIES) == "10.0.0.2"


def test_a_peer_that_is_not_a_trusted_proxy_cannot_name_another_address() -> None:
    assert client_ip(CLIENT, "1.2.3.4", PROXIES) == CLIENT
    assert client_ip(CLIENT, "10.0.0.9", PROXIES) == CLIENT


def test_behind_a_trusted_proxy_the_address_it_appended_is_the_client() -> None:
    assert client_ip("10.0.0.2", CLIENT, PROXIES) == CLIENT


def test_an_address_the_client_put_in_the_header_itself_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the address it saw.
    assert client_ip("10.0.0.2", f"1.2.3.4, {CLIENT}", PROXIES) == CLIENT
    # Even when the forged entry is a trusted proxy's address.
    assert client_ip("10.0.0.2", f"10.9.9.9, {CLIENT}", PROXIES) == CLIENT


def test_a_chain_of_trusted_proxies_is_skipped() -> None:
    header = f"1.2.3.4, {CLIENT}, 10.0.0.7, 192.168.1.5"

    assert client_ip("10.0.0.2", header, PROXIES) == CLIENT


def test_hops_are_read_with_any_spacing() -> None:
    assert client_ip("10.0.0.2", f"1.2.3.4,{CLIENT} ,  10.0.0.7", PROXIES) == CLIENT


def test_when_every_hop_is_a_trusted_proxy_the_leftmost_is_the_client() -> None:
    assert client_ip("10.0.0.2", "10.0.0.8, 10.0.0.7", PROXIES) == "10.0.0.8"


def test_a_malformed_hop_stops_the_walk_at_the_last_good_hop() -> None:
    # Nothing left of a garbled entry can be trusted; the last proxy we trust is what we know.
    assert client_ip("10.0.0.2", "1.2.3.4, garbage, 10.0.0.7", PROXIES) == "10.0.0.7"
    assert client_ip("10.0.0.2", "1.2.3.4, not-an-ip", PROXIES) == "10.0.0.2"
    # A hop with a port is not an address either.
    assert client_ip("10.0.0.2", f"{CLIENT}:4711", PROXIES) == "10.0.0.2"


def test_a_malformed_hop_left_of_the_client_does_not_matter() -> None:
    assert client_ip("10.0.0.2", f"garbage, {CLIENT}", PROXIES) == CLIENT


def test_ipv6_clients_behind_ipv6_proxies() -> None:
    assert client_ip("fd00::1", "2001:db8::7", PROXIES) == "2001:db8::7"
    assert client_ip("fd00::1", "2001:db8::1, 2001:db8::7, fd00::2", PROXIES) == "2001:db8::7"


def test_ipv6_addresses_are_returned_in_their_compressed_form() -> None:
    assert client_ip("10.0.0.2", "2001:0db8:0000:0000:0000:0000:0000:0007", PROXIES) == "2001:db8::7"


def test_an_ipv6_peer_that_is_not_trusted_is_the_client() -> None:
    assert client_ip("2001:db8::99", "1.2.3.4", PROXIES) == "2001:db8::99"


def test_a_peer_that_is_not_an_address_is_passed_through_and_not_trusted() -> None:
    assert client_ip("", "1.2.3.4", PROXIES) == ""
    assert client_ip("unix:/run/gateway.sock", "1.2.3.4", PROXIES) == "unix:/run/gateway.sock"


def test_an_ipv4_proxy_seen_through_a_dual_stack_socket_is_still_trusted() -> None:
    # Listening on "::", the server reports an IPv4 peer as ::ffff:a.b.c.d.
    assert client_ip("::ffff:10.0.0.2", f"1.2.3.4, {CLIENT}", PROXIES) == CLIENT
    assert client_ip("10.0.0.2", f"{CLIENT}, ::ffff:10.0.0.7", PROXIES) == CLIENT


def test_an_ipv4_client_is_one_address_however_it_is_written() -> None:
    assert client_ip(f"::ffff:{CLIENT}", None, PROXIES) == CLIENT
    assert client_ip("10.0.0.2", f"::ffff:{CLIENT}", PROXIES) == CLIENT
