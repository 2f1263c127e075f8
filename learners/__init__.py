"""The machine side. `learners.ml` is plain arrays and scikit-learn (no Django);
the Django part records model versions and runs training through services and tasks."""
