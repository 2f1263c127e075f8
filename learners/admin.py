import json

from django.contrib import admin

from learners.models import (
    FeatureSpace,
    FederatedRound,
    FederatedRun,
    Federation,
    FederationSite,
    ModelVersion,
    SiteLedgerEntry,
    SiteOffer,
)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "estimator", "query_strategy", "trained_on", "items_scored", "created_at"]
    list_filter = ["project"]
    exclude = ["artifact", "stop_set"]
    readonly_fields = ["project", "number", "request_id", "estimator", "query_strategy", "featuriser", "trained_on",
                       "label_count", "metrics", "items_scored", "train_seconds", "score_seconds"]


@admin.register(FeatureSpace)
class FeatureSpaceAdmin(admin.ModelAdmin):
    list_display = ["project", "featuriser", "version", "dim", "is_sparse", "fitted_on", "created_at"]
    list_filter = ["project"]
    exclude = ["state"]
    readonly_fields = ["project", "featuriser", "version", "dim", "is_sparse", "fitted_on"]


class FederationSiteInline(admin.TabularInline):
    model = FederationSite
    extra = 0
    fields = ["slug", "region", "project"]


@admin.register(Federation)
class FederationAdmin(admin.ModelAdmin):
    list_display = ["name", "backend", "strategy", "mode", "estimator", "featuriser", "site_count",
                    "secure_aggregation", "privacy_summary", "compression", "created_at"]
    inlines = [FederationSiteInline]
    actions = ["start_run"]
    readonly_fields = ["public_key"]

    @admin.display(description="sites")
    def site_count(self, federation: Federation) -> int:
        return federation.sites.count()

    @admin.display(description="differential privacy")
    def privacy_summary(self, federation: Federation) -> str:
        p = federation.privacy or {}
        return f"σ={p['noise_multiplier']}, C={p['clip_norm']} ({p.get('mode', 'site')})" if p else "off"

    @admin.action(description="Start a 10-round run of the selected federations")
    def start_run(self, request, queryset):
        from annotate.access import can_manage
        from learners.services.federated import FederationInvalid, federated_run_create, federated_run_enqueue

        for federation in queryset:
            refused = [site.slug for site in federation.sites.select_related("project")
                       if site.project is not None and not can_manage(request.user, site.project)]
            if refused:  # the same rule as every other interface (annotate.access): managers start training
                self.message_user(request, f"{federation}: you may not manage the projects of sites {refused}",
                                  level="error")
                continue
            try:
                run = federated_run_create(federation_id=federation.pk, rounds=10)
            except FederationInvalid as exc:
                self.message_user(request, f"{federation}: {exc}", level="error")
                continue
            federated_run_enqueue(run)
            self.message_user(request, f"{federation}: run {run.pk} queued")


class FederatedRoundInline(admin.TabularInline):
    model = FederatedRound
    extra = 0
    can_delete = False
    fields = readonly_fields = ["number", "version", "updates", "participant_list", "dropout_list", "bytes_in",
                                "bytes_out", "accuracy", "heldout", "epsilon", "seconds"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="participants")
    def participant_list(self, row: FederatedRound) -> str:
        return ", ".join(row.participants)

    @admin.display(description="dropouts")
    def dropout_list(self, row: FederatedRound) -> str:
        return "; ".join(f"{site}: {why}" for site, why in row.dropouts.items()) or "none"

    # The incoming global weights scored on the rows the sites then train on: optimistic, and not a
    # measure of generalisation (it reached 1.000 while held-out accuracy fell). Named for what it is.
    @admin.display(description="accuracy on sites' training rows")
    def accuracy(self, row: FederatedRound) -> str:
        value = row.metrics.get("accuracy_before")
        return "" if value is None else f"{value:.3f}"

    @admin.display(description="held-out accuracy (rows the sites keep aside)")
    def heldout(self, row: FederatedRound) -> str:
        value = row.metrics.get("heldout_accuracy")
        return "" if value is None else f"{value:.3f}"


@admin.register(FederatedRun)
class FederatedRunAdmin(admin.ModelAdmin):
    list_display = ["id", "federation", "status", "rounds", "rounds_done", "epsilon", "created_at", "finished_at"]
    list_filter = ["federation", "status"]
    exclude = ["weights"]
    readonly_fields = ["federation", "rounds", "status", "task_id", "cancel_requested", "error", "plan", "epsilon",
                       "finished_at"]
    inlines = [FederatedRoundInline]

    @admin.display(description="rounds done")
    def rounds_done(self, run: FederatedRun) -> int:
        return run.round_records.count()


class RecordOnly:
    """A record of what happened (a federated round, a site's ledger entry): nobody adds, edits or deletes one."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FederatedRound)
class FederatedRoundAdmin(RecordOnly, admin.ModelAdmin):
    """Every round of every run: who took part, who dropped out, what crossed, how well the model does."""

    list_display = ["run", "number", "version", "updates", "participant_count", "dropout_list", "bytes_in",
                    "bytes_out", "accuracy", "heldout", "epsilon", "seconds"]
    list_filter = ["run__federation", "run"]
    exclude = ["payloads"]
    readonly_fields = ["run", "number", "version", "participants", "dropouts", "updates", "aggregated", "bytes_in",
                       "site_bytes_in", "bytes_out", "metrics", "epsilon", "seconds", "payload_table"]

    participant_count = admin.display(description="participants")(lambda self, row: len(row.participants))
    dropout_list = FederatedRoundInline.dropout_list
    accuracy = FederatedRoundInline.accuracy
    heldout = FederatedRoundInline.heldout


    @admin.display(description="payload audit")
    def payload_table(self, row: FederatedRound) -> str:
        from django.utils.html import format_html_join

        return format_html_join(
            "", "<div>{} {} {}: {} bytes, arrays {}; header {}</div>",
            ((p["direction"], p["site"], p["kind"], p["nbytes"],
              ", ".join(f"{name} {dtype}{tuple(shape)}" for name, (dtype, shape) in p["arrays"].items()),
              json.dumps(p["meta"], sort_keys=True))
             for p in row.payloads),
        )


@admin.register(SiteOffer)
class SiteOfferAdmin(admin.ModelAdmin):
    """At a site: the projects it offered to federations elsewhere, and on what terms."""

    list_display = ["federation", "site_name", "project", "transport", "enabled", "offered_by", "updated_at"]
    readonly_fields = ["offered_by", "created_at", "updated_at"]


@admin.register(SiteLedgerEntry)
class SiteLedgerEntryAdmin(RecordOnly, admin.ModelAdmin):
    """At a site: every message it received from or sent to a federation, and every request it refused."""

    list_display = ["at", "federation", "direction", "kind", "round", "nbytes", "reason"]
    list_filter = ["federation", "direction", "transport"]

