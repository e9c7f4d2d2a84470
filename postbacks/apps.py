from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_save


class PostbacksConfig(AppConfig):
    name = "postbacks"
    verbose_name = "Postbacks"

    def ready(self) -> None:
        from campaigns import presets
        from postbacks import rules, services, tasks
        from postbacks.models import PostbackRule
        from postbacks.services import rules_cache_clear
        from tracker import services as tracker_services

        # celery-types: apply_async(countdown: float); Celery takes None for no countdown.
        services.use_dispatch_task(tasks.dispatch_task)  # type: ignore[arg-type]
        presets.use_rule_factory(rules.rule_from_preset)
        tracker_services.use_planner(services)

        post_save.connect(rules_cache_clear, sender=PostbackRule, dispatch_uid="rules-save")
        post_delete.connect(rules_cache_clear, sender=PostbackRule, dispatch_uid="rules-del")
        for field in (
            "campaigns",
            "offers",
            "traffic_sources",
            "affiliate_networks",
            "rejection_reasons",
        ):
            through = getattr(PostbackRule, field).through
            m2m_changed.connect(rules_cache_clear, sender=through, dispatch_uid=f"rules-{field}")
