import pytest

from hyperfed.flower.errors import ClientIdentityError
from hyperfed.flower.handshake import resolve_client_id

IDS = ["code/asyncio", "code/email", "docs/topics-00-12"]


def test_deployment_nodes_name_their_client():
    assert resolve_client_id({"client-id": "code/email"}) == "code/email"
    assert resolve_client_id({"client-id": "code/email", "partition-id": 0}, IDS) == "code/email"


def test_simulation_nodes_map_partitions_to_corpus_clients():
    assert [resolve_client_id({"partition-id": i, "num-partitions": 3}, IDS) for i in range(3)] == IDS


@pytest.mark.parametrize(
    "node_config,match",
    [({}, "names no client"), ({"partition-id": 3}, "outside the corpus"), ({"client-id": " "}, "empty")],
)
def test_nodes_without_a_client_raise_a_typed_error(node_config, match):
    with pytest.raises(ClientIdentityError, match=match):
        resolve_client_id(node_config, IDS)
