"""manage.py runworkbench: embedded Redis (unless REDIS_URL), one Celery worker and the web server.

Stops all of them on Ctrl-C or SIGTERM.
"""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from workbench.embedded_redis import EmbeddedRedis


class Command(BaseCommand):
    help = "Run the workbench: embedded Redis when REDIS_URL is unset, a Celery worker and gunicorn."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, **options):
        redis_server = None
        if settings.EMBEDDED_REDIS:
            redis_server = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
            redis_server.start()
            self.stdout.write(f"embedded redis on {settings.EMBEDDED_REDIS_SOCKET}")
        bin_dir = os.path.dirname(sys.executable)
        children = [
            subprocess.Popen([os.path.join(bin_dir, "celery"), "-A", "workbench", "worker",
                              "--loglevel", "INFO", "--concurrency", "1", "--hostname", "workbench@%h"]),
            subprocess.Popen([os.path.join(bin_dir, "gunicorn"), "workbench.wsgi",
                              "--bind", f"{options['host']}:{options['port']}",
                              "--workers", str(options["web_workers"]), "--threads", "4",
                              "--worker-class", "gthread", "--access-logfile", "-"]),
        ]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"workbench running at {url}  (Ctrl-C stops it)"))
        try:
            while not stopping:
                if any(child.poll() is not None for child in children):
                    self.stderr.write("a workbench process exited; stopping the others")
                    break
                time.sleep(0.5)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
            if redis_server is not None:
                redis_server.stop()
            self.stdout.write("workbench stopped")
