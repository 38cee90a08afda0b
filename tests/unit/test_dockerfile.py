import pytest

from labs.cli import DEFAULTS
from labs.docker import dockerfile_values, normalized_dockerfile
from labs.errors import UsageError
from labs.templates import render

# The workshop's Dockerfile, as printed in containers-workshop.md.
WORKSHOP = """FROM ubuntu:18.04

RUN apt-get -y update

# update packages and install
RUN apt-get install -y openjdk-11-jre-headless wget curl unzip

RUN apt-get -y install git
RUN apt-get -y install maven

ENV JAVA_HOME /usr/lib/jvm/java-11-openjdk-amd64
"""


def rendered(**dockerfile):
    settings = {"images": dict(DEFAULTS["docker"]["images"]), "dockerfile": {**DEFAULTS["docker"]["dockerfile"], **dockerfile}}
    return render("Dockerfile.j2", dockerfile_values(settings), "docker.dockerfile")


def test_defaults_reproduce_the_workshops_dockerfile():
    assert rendered() == WORKSHOP


def test_normalization_ignores_comments_and_spacing():
    assert normalized_dockerfile(WORKSHOP) == normalized_dockerfile(
        WORKSHOP.replace("# update packages and install\n", "").replace("RUN apt-get -y update", "RUN   apt-get -y update  "))
    assert normalized_dockerfile(WORKSHOP) != normalized_dockerfile(WORKSHOP.replace("maven", "gradle"))


def test_package_names_are_shell_quoted():
    text = rendered(packages=[["git", "x; touch /tmp/pwned", "$(id)"]])
    assert "RUN apt-get install -y git 'x; touch /tmp/pwned' '$(id)'" in text


def test_java_home_with_specials_is_one_quoted_value():
    text = rendered(java_home='/opt/my jdk "$HOME"')
    assert 'ENV JAVA_HOME "/opt/my jdk \\"\\$HOME\\""' in text


@pytest.mark.parametrize("field, value", [
    ("java_home", "/opt/jdk\nRUN touch /tmp/pwned"),
    ("extra_instructions", ["RUN true\nRUN touch /tmp/pwned"]),
])
def test_values_cannot_add_instructions(field, value):
    with pytest.raises(UsageError):
        rendered(**{field: value})


@pytest.mark.parametrize("image", ["ubuntu:18.04 AS x", "ubuntu\nRUN id", "UBUNTU", ""])
def test_base_image_must_be_an_image_name(image):
    settings = {"images": {"base": image}, "dockerfile": DEFAULTS["docker"]["dockerfile"]}
    with pytest.raises(UsageError):
        render("Dockerfile.j2", dockerfile_values(settings), "docker.dockerfile")
