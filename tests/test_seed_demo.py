"""`manage.py seed_demo`: a demo superuser only where asked, its password printed once, when it is made."""
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotate.management.commands.seed_demo import DEMO_PROJECT, DIGITS_PROJECT
from tests.factories import make_project, make_user


def seed_demo(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_projects_exist():
    """The two demo projects already there, so the command does not import thousands of items."""
    for name in (DEMO_PROJECT, DIGITS_PROJECT):
        project = make_project(make_user())
        project.name = name
        project.save(update_fields=["name"])


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    return tmp_path


@pytest.mark.django_db
def test_demo_off_creates_no_user_and_prints_no_password(settings, data_dir):
    settings.WORKBENCH_DEMO = False
    output = seed_demo()
    assert not get_user_model().objects.filter(username="demo").exists()
    assert "password" not in output and "WORKBENCH_DEMO is off" in output
    assert not (data_dir / "demo-login.txt").exists()


@pytest.mark.django_db
def test_password_is_printed_when_the_user_is_made_and_never_again(settings, data_dir, demo_projects_exist):
    settings.WORKBENCH_DEMO = True
    first = seed_demo()
    password = (data_dir / "demo-login.txt").read_text()
    demo = get_user_model().objects.get(username="demo")
    assert demo.is_superuser and demo.check_password(password)
    assert f"password {password}" in first

    again = seed_demo()
    assert password not in again and "demo user exists" in again
    demo.refresh_from_db()
    assert demo.check_password(password)  # a restart does not reset it


@pytest.mark.django_db
def test_force_creates_the_demo_with_demo_off(settings, data_dir, demo_projects_exist):
    settings.WORKBENCH_DEMO = False
    output = seed_demo("--force")
    assert get_user_model().objects.filter(username="demo").exists() and "password" in output
