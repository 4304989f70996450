"""C2SP tlog-proof: the specification's example parses; our proofs verify offline and
refuse another leaf, another index, a checkpoint without the witness quorum."""

from __future__ import annotations

import base64

import pytest

from kaireon_client.tlog.checkpoint import CheckpointError
from kaireon_client.tlog.merkle import ProofError, inclusion_proof
from kaireon_client.tlog.proof import (
    TlogProof,
    format_tlog_proof,
    parse_tlog_proof,
    verify_tlog_proof,
)
from tests.tlog.support import Log

# tlog-proof.md, introduction (its signatures are elided with "[...]" in the spec).
SPEC_PROOF = """c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
"""


def test_the_spec_example_parses_and_formats_back() -> None:
    proof = parse_tlog_proof(SPEC_PROOF)
    assert proof.index == 73894 and len(proof.proof) == 5
    assert proof.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert proof.checkpoint.startswith("example.com/fancylog\n109482\n")
    assert format_tlog_proof(proof) == SPEC_PROOF


def test_an_entry_proof_verifies_offline_and_binds_leaf_and_index() -> None:
    log = Log()
    log.append(11)
    keys = [log.signer.verifier()]
    witnesses = [w.verifier() for w in log.witnesses]
    path = tuple(inclusion_proof(log.hashes(), 6, 11))
    text = format_tlog_proof(TlogProof(6, path, log.signed()))
    leaf = log.leaves[6].canonical()
    signed = verify_tlog_proof(text, leaf, keys, witnesses, quorum=3, origin=log.origin)
    assert signed.checkpoint.size == 11
    with pytest.raises(ProofError, match="index 6"):
        verify_tlog_proof(text, log.leaves[5].canonical(), keys, witnesses, quorum=3)
    moved = format_tlog_proof(TlogProof(7, path, log.signed()))
    with pytest.raises(ProofError):
        verify_tlog_proof(moved, leaf, keys, witnesses, quorum=3)
    lonely = format_tlog_proof(TlogProof(6, path, log.signed(cosigners=1)))
    with pytest.raises(CheckpointError, match="only 1 of the required 2"):
        verify_tlog_proof(lonely, leaf, keys, witnesses, quorum=2)


@pytest.mark.parametrize(
    "text",
    [
        "c2sp.org/tlog-proof@v2\nindex 1\n\nx\n",
        "c2sp.org/tlog-proof@v1\nindex 01\n\nx\n",
        "c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\nx\n",
        "c2sp.org/tlog-proof@v1\nindex 1\nnot-a-hash\n\nx\n",
        "c2sp.org/tlog-proof@v1\nindex 1\n",
    ],
)
def test_malformed_proofs_are_refused(text: str) -> None:
    with pytest.raises(ProofError):
        parse_tlog_proof(text)
