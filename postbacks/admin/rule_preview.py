"""The rule form's preview and test button: two JSON views on the form's current (unsaved)
values, the preview of the request they would send and one test postback sent now. The
rendering and sending are the domain's (:mod:`postbacks.preview`); these views read the
form data and answer."""

from __future__ import annotations

from typing import cast

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, path, reverse

from postbacks import preview
from postbacks.masking import mask_headers, mask_secrets
from postbacks.models import PostbackRule
from postbacks.rules import (
    RESPONSE_EXCERPT_CHARS,
    TEMPLATE_FIELDS,
    PostbackRuleForm,
    describe_conversion,
    form_messages,
    preview_answer,
)


class RulePreviewAdmin(admin.ModelAdmin):
    """The rule admin's preview and test views, with their URLs; its ``form`` is a
    :class:`~postbacks.rules.PostbackRuleForm`."""

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("preview/", wrap(self.preview_view), name="{}_{}_preview".format(*info)),
            path("test/", wrap(self.test_view), name="{}_{}_test_unsaved".format(*info)),
            path("<path:object_id>/test/", wrap(self.test_view), name="{}_{}_test".format(*info)),
            *super().get_urls(),
        ]

    def preview_urls(self, request: HttpRequest, obj: PostbackRule | None) -> dict[str, str]:
        """Where the form's script posts: ``preview_url``, and ``test_url`` ('' without the
        change permission)."""
        info = self.opts.app_label, self.opts.model_name
        urls = {"preview_url": reverse("admin:{}_{}_preview".format(*info)), "test_url": ""}
        if self.has_change_permission(request, obj):
            urls["test_url"] = (
                reverse("admin:{}_{}_test_unsaved".format(*info))
                if obj is None
                else reverse("admin:{}_{}_test".format(*info), args=[obj.pk])
            )
        return urls

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """The request the form's current (unsaved) values would send: POST the form data,
        plus ``_conversion`` (a conversion ID or transaction ID; empty: sample data).
        Answers JSON, also for garbage: ``{"request", "errors", "warnings", "conversion"}``."""
        if not (self.has_change_permission(request) or self.has_add_permission(request)):
            return JsonResponse(
                preview_answer(errors=["You may not edit postback rules."]), status=403
            )
        if request.method != "POST":
            return JsonResponse(preview_answer(errors=["POST the rule form's data."]), status=405)
        conversion, problem = preview.find_conversion(request.POST.get("_conversion") or "")
        if problem:
            return JsonResponse(preview_answer(errors=[problem]), status=400)
        form, rule = self._form_rule(request, obj=None)
        rendered = preview.render_preview(rule, conversion, known_vars=form.known_vars())
        answer = preview_answer(
            errors=form_messages(form) + list(rendered.get("errors") or []),
            warnings=form.validation_warnings + list(rendered.get("warnings") or []),
            conversion=describe_conversion(conversion),
            request={key: rendered.get(key, "") for key in ("method", "url", "headers", "body")},
        )
        return JsonResponse(answer)

    def test_view(self, request: HttpRequest, object_id: str | None = None) -> JsonResponse:
        """Send one test postback now with the form's current values (unsaved changes
        included; on the add form, an unsaved rule) for a sample or a chosen conversion.
        Answers the request sent and the response, and links the test delivery in the log.
        Without form data, a saved rule is sent as saved."""
        obj = None
        if object_id is not None:
            obj = self.get_object(request, unquote(object_id))
            if obj is None:
                return JsonResponse(preview_answer(errors=["No such rule."]), status=404)
        if not self.has_change_permission(request, obj):
            return JsonResponse(
                preview_answer(errors=["You may not change postback rules."]), status=403
            )
        if request.method != "POST":
            return JsonResponse(
                preview_answer(errors=["POST to send a test postback."]), status=405
            )
        conversion, problem = preview.find_conversion(request.POST.get("_conversion") or "")
        if problem:
            return JsonResponse(preview_answer(errors=[problem]), status=400)
        rule = obj
        if rule is None or "url_template" in request.POST:
            form, rule = self._form_rule(request, obj=obj)
            if form.errors:
                errors = ["Nothing was sent: correct the form first.", *form_messages(form)]
                return JsonResponse(preview_answer(errors=errors), status=400)
        try:
            delivery, attempt = preview.send_test(rule, conversion, user=request.user)
        except ValidationError as exc:
            errors = ["Nothing was sent.", *preview.field_messages(exc)]
            return JsonResponse(preview_answer(errors=errors), status=400)
        answer = preview_answer(
            conversion=describe_conversion(conversion)
            if conversion is not None
            else "The most recent click in the rule's scope (else any click, else samples) "
            "with sample conversion values.",
            request={
                "method": delivery.method,
                "url": attempt.url,  # as logged: secrets masked
                "headers": mask_headers(delivery.headers),
                "body": mask_secrets(delivery.body),
            },
            response={
                "status_code": attempt.status_code,
                "body": attempt.response_body[:RESPONSE_EXCERPT_CHARS],
                "duration_ms": attempt.duration_ms,
                "outcome": attempt.outcome,
                "outcome_label": attempt.get_outcome_display(),
                "error": attempt.error,
            },
            delivery_id=delivery.pk,
            delivery_url=reverse("admin:postbacks_delivery_change", args=[delivery.pk]),
        )
        return JsonResponse(answer)

    def _form_rule(
        self, request: HttpRequest, obj: PostbackRule | None
    ) -> tuple[PostbackRuleForm, PostbackRule]:
        """The bound rule form and an unsaved rule with its values (``obj`` untouched).
        A template with errors is kept as typed, so a preview shows what was written."""
        form_class = self.get_form(request, obj, change=obj is not None)
        # get_form builds on self.form, a PostbackRuleForm.
        form = cast(PostbackRuleForm, form_class(request.POST, instance=obj))
        form.is_valid()
        rule = form.rule_from_data()
        for name in TEMPLATE_FIELDS:
            raw = request.POST.get(name)
            if raw is not None and name in form.errors:
                setattr(rule, name, raw[:20000])
        return form, rule
