"""Run a peer connector against the simulator, inside the peer's own virtualenv.

Usage (by ``bench/peers.py``): ``<venv>/bin/python bench/peer_runner.py tap|airbyte BASE_URL
-- ARGS…``. Neither peer has a base-URL option, so this points their hard-coded
``https://graph.facebook.com`` at BASE_URL, and refuses every connection to a non-loopback
address before anything else is imported. Runs under Python 3.10 (tap-instagram) too, and
imports nothing from the collector.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install_guard() -> None:
    """Any connection or name lookup for a host that is not loopback raises."""
    plain_connect = socket.socket.connect
    plain_connect_ex = socket.socket.connect_ex
    plain_getaddrinfo = socket.getaddrinfo

    def check(address: object) -> None:
        if isinstance(address, tuple) and not _loopback(address[0]):
            raise ConnectionRefusedError(f"bench guard: refusing non-loopback {address[0]!r}")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        plain_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return plain_connect_ex(self, address)  # type: ignore[arg-type]

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is not None and not _loopback(host):
            raise socket.gaierror(f"bench guard: refusing to resolve {host!r}")
        return plain_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def run_tap(base_url: str, args: list[str]) -> int:
    import tap_instagram.client  # after the guard
    import tap_instagram.tap

    # The tap omits the version (Meta then uses the app's default); the simulator needs one.
    version = os.environ.get("BENCH_TAP_API_VERSION", "v25.0")
    tap_instagram.client.BASE_URL = f"{base_url}/{version}"
    tap_instagram.tap.BASE_URL = f"{base_url}/{version}/{{ig_user_id}}"
    sys.argv = ["tap-instagram", *args]
    tap_instagram.tap.TapInstagram.cli()
    return 0


def run_airbyte(base_url: str, args: list[str]) -> int:
    import source_instagram.components
    import source_instagram.run
    from airbyte_cdk.sources.declarative import yaml_declarative_source

    source_instagram.components.GRAPH_URL = f"{base_url}/v21.0"
    cls = yaml_declarative_source.YamlDeclarativeSource
    plain_read = cls._read_and_parse_yaml_file

    def read(self: object, path: str) -> dict:  # type: ignore[type-arg]
        manifest = plain_read(self, path)  # type: ignore[arg-type]
        requester = manifest["definitions"]["base_requester"]
        requester["url_base"] = requester["url_base"].replace(
            "https://graph.facebook.com", base_url
        )
        return manifest  # type: ignore[no-any-return]

    cls._read_and_parse_yaml_file = read  # type: ignore[method-assign,assignment]
    sys.argv = ["source-instagram", *args]
    source_instagram.run.run()
    return 0


def main(argv: list[str]) -> int:
    peer, base_url, sep, *args = argv
    if sep != "--" or not base_url.startswith("http://127.0.0.1:"):
        print("usage: peer_runner.py tap|airbyte http://127.0.0.1:PORT -- ARGS", file=sys.stderr)
        return 2
    install_guard()
    if peer == "tap":
        return run_tap(base_url, args)
    if peer == "airbyte":
        return run_airbyte(base_url, args)
    print(f"unknown peer {peer!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
