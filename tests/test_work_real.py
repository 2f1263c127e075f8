"""Background work with real worker processes: redelivery after a kill, coalescing, fairness, a lost send.

learners.services.work keeps each project's retrain as a state in the database; these
tests check what a user sees from it with real `celery worker` processes on real Redis:

- the pool process SIGKILLed mid-retrain: the message is delivered again and one version exists;
- 1,000 labels while the worker is paused: at most 2 retrains when it resumes;
- one project labelled without pause does not hold another's retrain up by more than one retrain;
- Redis down when the 10th label arrives, then back: the retrain runs without another label.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from sklearn.datasets import load_digits

from annotate.models import Annotation
from annotate.services.annotations import annotation_create
from annotate.services.importing import import_items
from annotate.services.queue import queue_next_item
from learners.models import ModelVersion, Work
from learners.services.training import featurise_and_order
from tests.conftest import ROOT, wait_for, worker_env
from tests.factories import add_annotator, make_project
from workbench.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.django_db(transaction=True)

DIGITS = load_digits()


def digits_project(n: int, **options):
    """An image project of the first `n` scikit-learn digits, featurised here; returns it and the true labels."""
    project = make_project(labels=[str(d) for d in range(10)], modality="image", **options)
    lines = "".join(json.dumps({"id": f"d{k}", "pixels": " ".join(str(int(v)) for v in DIGITS.images[k].ravel())})
                    + "\n" for k in range(n))
    import_items(project=project, stream=io.BytesIO(lines.encode()), file_format="jsonl", source_name="digits")
    featurise_and_order(project_id=project.pk)
    gold = {f"d{k}": str(DIGITS.target[k]) for k in range(n)}
    return project, gold


def label(project, annotator, gold, n: int) -> None:
    for _ in range(n):
        served = queue_next_item(project=project, annotator=annotator)
        annotation_create(project=project, annotator=annotator, item_id=served.item_id,
                          label=gold[served.item.external_id])


def retrain_idle(project) -> bool:
    work = Work.objects.filter(project=project, kind="retrain").first()
    return work is not None and work.pending_since is None and work.running_since is None


def task_state(task_id: str) -> str | None:
    from workbench.celery import task_state as read

    return read(task_id)[0]


def worker_start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """A `celery worker` in a process group of its own: its pool and its beat (-B) are children that
    outlive a SIGKILLed parent, and stop_process ends them all."""
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workbench", "worker", *args], cwd=ROOT,
                            env=worker_env(**env), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left (a beat child)
    except (ProcessLookupError, PermissionError):
        pass


def test_pool_process_killed_mid_retrain_is_delivered_again_and_makes_one_version():
    project, gold = digits_project(1500, retrain_every=100_000, estimator="mlp")
    label(project, add_annotator(project), gold, 300)
    log = settings.DATA_DIR / "work-kill.log"
    worker = worker_start(["--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO", "--queues", "work-kill",
                           "--hostname", "work-kill@%h", "--without-gossip", "--without-mingle",
                           "--without-heartbeat"], log)
    try:
        wait_for(lambda: "ready." in log.read_text() or worker.poll() is not None, timeout=60,
                 message="the prefork worker to start")
        sender = Celery(broker=settings.CELERY_BROKER_URL, set_as_current=False)
        task_id = sender.send_task("workbench.retrain", kwargs={"project_id": project.pk}, queue="work-kill").id
        wait_for(lambda: task_state(task_id) == "PROGRESS", timeout=120, interval=0.01,
                 message="the retrain to start")
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)

        wait_for(lambda: task_state(task_id) in ("SUCCESS", "FAILURE"), timeout=180, interval=0.1,
                 message="the retrain to be delivered again and finish")

        assert task_state(task_id) == "SUCCESS", log.read_text()[-3000:]
        work = Work.objects.get(project=project, kind="retrain")
        assert work.runs == 1 and work.running_since is None, "the second delivery ran the same claim again"
        assert f"task {task_id} delivered again (its worker stopped); running it again" in log.read_text()
        versions = list(ModelVersion.objects.filter(project=project))
        assert len(versions) == 1 and versions[0].trained_on == 300
        assert versions[0].request_id == task_id
    finally:
        stop_process(worker)


@pytest.mark.slow
def test_a_thousand_labels_while_the_worker_is_paused_run_at_most_two_retrains(celery_worker):
    project, gold = digits_project(1100, retrain_every=10)
    annotator = add_annotator(project)
    os.kill(celery_worker.process.pid, signal.SIGSTOP)
    try:
        label(project, annotator, gold, 1000)
        work = Work.objects.get(project=project, kind="retrain")
        assert work.requested == 1 and work.pending_since is not None, "100 due retrains are one request"
    finally:
        os.kill(celery_worker.process.pid, signal.SIGCONT)

    wait_for(lambda: ModelVersion.objects.filter(project=project, trained_on=1000).exists() and retrain_idle(project),
             timeout=180, interval=0.2, message="a retrain on all 1,000 labels")
    time.sleep(2.0)  # anything still queued would run now
    versions = ModelVersion.objects.filter(project=project).count()
    print(f"1,000 labels while paused: {versions} model version(s), "
          f"{Work.objects.get(project=project, kind='retrain').runs} run(s)")
    assert 1 <= versions <= 2


RETRAIN_DONE = re.compile(r"Task workbench\.retrain\[([0-9a-f-]+)\] succeeded in ([0-9.]+)s: (\{.*\})")


@pytest.mark.slow
def test_a_busy_project_delays_another_projects_retrain_by_at_most_one_retrain(celery_worker):
    busy, busy_gold = digits_project(1700, retrain_every=10, estimator="mlp")
    quiet, quiet_gold = digits_project(200, retrain_every=10)
    busy_annotator, quiet_annotator = add_annotator(busy), add_annotator(quiet)
    label(busy, busy_annotator, busy_gold, 500)  # enough labels that each of its retrains takes a while
    wait_for(lambda: ModelVersion.objects.filter(project=busy, trained_on=500).exists(), timeout=120,
             message="the busy project's version on 500 labels")
    label(quiet, quiet_annotator, quiet_gold, 9)
    stop = threading.Event()
    labelled = [0]

    def keep_labelling() -> None:  # 4 annotators' worth: a retrain falls due every few hundred ms
        from django.db import connection

        try:
            while not stop.is_set():
                label(busy, busy_annotator, busy_gold, 1)
                labelled[0] += 1
        finally:
            connection.close()

    log_start = len(celery_worker.log())
    thread = threading.Thread(target=keep_labelling)
    thread.start()
    try:
        runs_before = Work.objects.get(project=busy, kind="retrain").runs
        wait_for(lambda: Work.objects.get(project=busy, kind="retrain").runs >= runs_before + 2, timeout=180,
                 message="the busy project to retrain back to back")
        label(quiet, quiet_annotator, quiet_gold, 1)  # the 10th label: the quiet project's retrain is due
        asked = time.monotonic()
        wait_for(lambda: ModelVersion.objects.filter(project=quiet).exists(), timeout=180, interval=0.02,
                 message="the quiet project's retrain")
        waited = time.monotonic() - asked
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()

    runs = [(float(seconds), json.loads(result.replace("'", '"').replace("None", "null")
                                        .replace("True", "true").replace("False", "false")).get("project_id"))
            for _, seconds, result in RETRAIN_DONE.findall(celery_worker.log()[log_start:])]
    busy_runs = [seconds for seconds, project_id in runs if project_id == busy.pk]
    quiet_runs = [seconds for seconds, project_id in runs if project_id == quiet.pk]
    print(f"quiet project's retrain waited {waited:.2f} s; busy project's retrains took "
          f"{[round(s, 2) for s in busy_runs]} s while {labelled[0]} labels arrived; quiet's took {quiet_runs}")
    assert busy_runs and quiet_runs, celery_worker.log()[-3000:]
    assert len(busy_runs) >= 2 and labelled[0] >= 50, "the busy project retrained back to back meanwhile"
    assert waited <= max(busy_runs) + quiet_runs[0] + 0.5, "at most one busy retrain ran before the quiet one"


@pytest.mark.slow
def test_redis_down_when_the_tenth_label_arrives_retrains_once_it_is_back(settings, tmp_path):
    from workbench.celery import _sender

    redis_server = EmbeddedRedis(Path("/tmp") / f"wb-down-{os.getpid()}" / "redis.sock")
    redis_server.start()
    url = f"unix://{redis_server.socket_path}"
    log = tmp_path / "down-worker.log"
    worker = None
    broker = settings.CELERY_BROKER_URL
    try:
        worker = worker_start(["-B", "--pool", "solo", "--loglevel", "INFO", "--hostname", "work-down@%h",
                               "--without-gossip", "--without-mingle", "--without-heartbeat",
                               "--schedule", str(tmp_path / "beat-schedule")],
                              log, REDIS_URL=url, WORKBENCH_WORK_SWEEP_SECONDS="2")
        wait_for(lambda: "ready." in log.read_text() or worker.poll() is not None, timeout=60,
                 message="the worker to start")
        settings.CELERY_BROKER_URL = "redis+socket://" + str(redis_server.socket_path)
        _sender.cache_clear()
        project, gold = digits_project(100, retrain_every=10)
        annotator = add_annotator(project)
        label(project, annotator, gold, 9)

        redis_server.stop()
        label(project, annotator, gold, 1)  # the 10th label: the retrain is due, the broker is down
        work = Work.objects.get(project=project, kind="retrain")
        assert work.pending_since is not None and work.sent_at is None, "the request is kept, unsent"
        time.sleep(3.0)
        assert not ModelVersion.objects.filter(project=project).exists()

        redis_server.start()
        back = time.monotonic()
        wait_for(lambda: ModelVersion.objects.filter(project=project).exists(), timeout=120, interval=0.2,
                 message="the retrain after Redis came back")
        print(f"retrained {time.monotonic() - back:.1f} s after Redis came back")
        assert Annotation.objects.filter(project=project).count() == 10, "no other label was needed"
        assert ModelVersion.objects.get(project=project).trained_on == 10
        assert "workbench.reconcile" in log.read_text()
    finally:
        settings.CELERY_BROKER_URL = broker
        _sender.cache_clear()
        if worker is not None:
            stop_process(worker)
        redis_server.stop()


@pytest.mark.slow
def test_a_whole_worker_killed_mid_retrain_is_handed_on_when_its_heartbeat_stops(tmp_path):
    """SIGKILL of the worker itself: its message stays unacknowledged (Redis gives it back only after the
    visibility timeout, an hour); the run's heartbeat stops and the sweep requests the retrain again."""
    project, gold = digits_project(1500, retrain_every=100_000, estimator="mlp")
    label(project, add_annotator(project), gold, 300)
    # Stale after 12 s: longer than the default 10 s heartbeat of the session's worker, which may take
    # the handed-on retrain from the default queue (every worker of a deployment shares these settings).
    fast = {"WORKBENCH_WORK_HEARTBEAT_SECONDS": "1", "WORKBENCH_WORK_STALE_SECONDS": "12",
            "WORKBENCH_WORK_SWEEP_SECONDS": "1"}

    def start(name: str, queues: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        process = worker_start(["-B", "--pool", "solo", "--loglevel", "INFO", "--queues", queues,
                                "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                                "--without-heartbeat", "--schedule", str(tmp_path / "beat-schedule")],
                               log, **fast)
        wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, timeout=60,
                 message=f"worker {name} to start")
        return process, log

    first, _ = start("whole-1", "work-whole")
    second = None
    try:
        sender = Celery(broker=settings.CELERY_BROKER_URL, set_as_current=False)
        task_id = sender.send_task("workbench.retrain", kwargs={"project_id": project.pk}, queue="work-whole").id
        wait_for(lambda: task_state(task_id) == "PROGRESS", timeout=120, interval=0.01, message="the retrain to start")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its beat: nothing of it is left to notice
        first.wait()
        assert not ModelVersion.objects.filter(project=project).exists()
        killed = time.monotonic()
        # The sweep sends the retrain again, to the default queue; this worker takes both.
        second, second_log = start("whole-2", "celery,work-whole")
        version = wait_for(lambda: ModelVersion.objects.filter(project=project).first(), timeout=120, interval=0.2,
                           message="the retrain to be handed on and run")
        print(f"version made {time.monotonic() - killed:.1f} s after the worker was killed")
        wait_for(lambda: retrain_idle(project), timeout=30, message="the handed-on run to finish")
        assert version.trained_on == 300 and ModelVersion.objects.filter(project=project).count() == 1
        work = Work.objects.get(project=project, kind="retrain")
        assert work.running_since is None and work.outcome == "trained"
        assert (work.requested, work.runs) == (2, 2), "the killed run, then the request the sweep made of it"
    finally:
        for process in (first, second):
            if process is not None:
                stop_process(process)
