"""The index from kernel rule handles to lines stays honest, and refusals read like nft's."""

from __future__ import annotations

from pathlib import Path

from simulator.firewall.rules import _iptables_message, _nft_message, build_index, parse_listing
from simulator.firewall.source import read_source

VECTORS = Path(__file__).resolve().parent / "vectors"


def test_a_file_edited_after_loading_gets_no_lines_rather_than_wrong_ones(tmp_path: Path) -> None:
    edited = tmp_path / "forward.iptables"
    text = (VECTORS / "forward.iptables").read_text()
    edited.write_text(text.replace("-A LYNC", "-A FORWARD -p udp -j ACCEPT\n-A LYNC"))
    index = build_index(
        "fw", read_source(edited), parse_listing((VECTORS / "listing.json").read_text())
    )
    assert {r.chain for r in index.rules.values()} == {"LYNC"}
    assert index.unmapped == [
        "ip filter FORWARD: the kernel's 4 rules do not match the file's 5 "
        "(edited since it was loaded?)"
    ]
    ref = index.rule("ip", "filter", "FORWARD", 6, "ip saddr 10.9.1.2 accept")
    assert (ref.line, ref.text, ref.where) == (
        None,
        "ip saddr 10.9.1.2 accept",
        "ip filter FORWARD #6",
    )


def test_nft_refusal_keeps_nft_own_words_without_our_wrapper() -> None:
    stderr = (
        "In file included from /dev/stdin:3:1-35:\n"
        "/etc/fw/edge.nft:4:21-21: Error: syntax error, unexpected newline\n"
        "\t\ttcp dport 5061 acept\n"
        "\t\t               ^\n"
    )
    assert _nft_message(stderr, "x") == (
        "/etc/fw/edge.nft:4:21-21: Error: syntax error, unexpected newline"
    )


def test_iptables_refusal_names_file_and_line() -> None:
    stderr = (
        'iptables-restore v1.8.9 (nf_tables): unknown option "--bogus"\n'
        "Error occurred at line: 4\n"
        "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n"
    )
    assert _iptables_message(stderr, Path("/etc/fw.rules")) == (
        '/etc/fw.rules:4: iptables-restore: unknown option "--bogus"'
    )
