import pytest

from sashimi.data.synthetic import make_speech_commands_tree


@pytest.fixture
def sc_root(tmp_path):
    root = tmp_path / "speech_commands"
    expected = make_speech_commands_tree(root)
    return root, expected
