import pytest

from labs.classroom import Student, load_inventory
from labs.errors import UsageError


def write(tmp_path, text):
    path = tmp_path / "class.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_to_every_host_and_hosts_override(tmp_path):
    students = load_inventory(write(tmp_path, """
defaults: {user: vagrant, key: ~/.ssh/lab, port: 2222}
hosts:
  - {name: ada, host: 10.0.0.1}
  - {name: bob, host: 10.0.0.2, port: 22, workdir: /home/bob/lab}
"""))
    assert students[0] == Student("ada", "10.0.0.1", 2222, "vagrant", students[0].key, "")
    assert students[0].key.endswith("/.ssh/lab") and not students[0].key.startswith("~")
    assert (students[1].port, students[1].workdir) == (22, "/home/bob/lab")
    assert students[1].spec == "vagrant@10.0.0.2:22"


@pytest.mark.parametrize("text, words", [
    ("hosts: [{name: a, host: h}, {name: a, host: g}]", "repeats the name a"),
    ("hosts: [{name: a, host: h}, {name: b, host: h}]", "repeats the address root@h:22"),
    ("hosts: [{name: a}]", "has no 'host' field"),
    ("hosts: [{name: a, host: h, colour: red}]", "unknown field(s) colour"),
    ("hosts: [{name: a, host: h, port: ssh}]", "port that is not a number"),
    ("hosts: [a, b]", "is not a mapping"),
    ("defaults: {}", "has no 'hosts:' list"),
    ("hosts: [{name: a, host: h}\n  - broken: [", "not valid YAML"),
])
def test_bad_inventories_are_one_clear_error(tmp_path, text, words):
    with pytest.raises(UsageError) as raised:
        load_inventory(write(tmp_path, text))
    assert words in raised.value.message
    assert raised.value.hint and raised.value.code == 2


def test_missing_inventory(tmp_path):
    with pytest.raises(UsageError) as raised:
        load_inventory(tmp_path / "nope.yaml")
    assert "does not exist" in raised.value.message
