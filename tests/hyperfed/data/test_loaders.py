import pytest

from hyperfed.data.loaders import (
    client_data_from_texts,
    corpus_from_directory,
    corpus_from_flwr_datasets,
    corpus_from_hf_dataset,
)
from hypernet.errors import ConfigError

TEXT = "All work and no play makes Jack a dull boy. " * 40  # ~1.8 KB


def test_directory_of_files_and_folders(tmp_path):
    (tmp_path / "alice.txt").write_text(TEXT)
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "a.txt").write_text(TEXT)
    (tmp_path / "bob" / "b.txt").write_text(TEXT.upper())
    (tmp_path / "notes.md").write_text("ignored")
    clients = corpus_from_directory(tmp_path, block_size=64, val_fraction=0.25)
    assert sorted(clients) == ["alice", "bob"]
    assert clients["bob"].train.shape[0] > clients["alice"].train.shape[0]
    assert clients["alice"].val.shape[1] == 64


def test_rows_grouped_by_client_like_a_hf_dataset():
    rows = [{"text": TEXT, "user": "u1"}, {"text": TEXT, "user": "u2"}, {"text": TEXT, "user": "u1"}]
    clients = corpus_from_hf_dataset(rows, client_column="user", block_size=64)
    assert sorted(clients) == ["u1", "u2"]
    assert clients["u1"].train.shape[0] > clients["u2"].train.shape[0]
    with pytest.raises(ConfigError, match="columns"):
        corpus_from_hf_dataset(rows, client_column="speaker")


def test_flwr_datasets_partitions_become_clients():
    class Partitions:  # the one method of flwr_datasets.FederatedDataset this loader uses
        def load_partition(self, i, split):
            return [{"text": TEXT + str(i)}]

    clients = corpus_from_flwr_datasets(Partitions(), 3, block_size=64)
    assert list(clients) == ["partition-0", "partition-1", "partition-2"]


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ConfigError, match="too little"):
        client_data_from_texts({"tiny": "hello"}, block_size=64)
