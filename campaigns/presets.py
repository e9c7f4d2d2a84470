"""Presets of real traffic sources: the click-ID macro, custom variables and S2S postback.

A preset fills in what the source documents: the campaign-URL parameter that carries its
click ID (the external ID) with the source's own macro, the custom variables worth keeping
(var1..var10) and the postback URL with our macros (``{externalid}``, ``{payout}``...).
Values only the manager knows (an account key, a goal ID, the name of a conversion event in
the source's dashboard) are written ``REPLACE_WITH_...``: a rule made from such a preset is
created inactive until they are replaced.

Each preset names the page it follows (``docs_url``) and how sure that page is
(``evidence``): the source's own documentation, or a tracker's or integration vendor's
(third-party), or nothing reliable for part of it (unconfirmed: check the source's
dashboard). Parts nobody documents are left empty rather than guessed.

:func:`source_from_preset` creates a traffic source, its parameters and its postback rule;
the rule itself is made by the postbacks app (:func:`use_rule_factory`, set in its
``ready()``): campaigns, the ground floor, imports nothing above it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from django.db import IntegrityError, transaction

from campaigns.models import TrafficSource, TrafficSourceParameter

if TYPE_CHECKING:
    from postbacks.models import PostbackRule

# Marks a value the manager must fill in: outside braces, so it is never read as a macro.
REPLACE_PREFIX = "REPLACE_WITH_"
_REPLACE_RE = re.compile(rf"{REPLACE_PREFIX}[A-Z0-9_]+")

OFFICIAL = "official"
THIRD_PARTY = "third-party"
UNCONFIRMED = "unconfirmed"
EVIDENCE_LABELS = {
    OFFICIAL: "the source's own documentation",
    THIRD_PARTY: "a tracker's or integration vendor's documentation (verify before relying)",
    UNCONFIRMED: "partly unconfirmed (check the source's dashboard)",
}

NATIVE = "Native"
PUSH_POP = "Push, pop and display"
SEARCH_SOCIAL = "Search, social and video"


@dataclass(frozen=True)
class PresetParameter:
    """One custom variable: ``slot`` (var1..var10), ``name`` (for ``{var:name}``), the
    campaign-URL ``param`` and the source's ``placeholder`` macro that fills it."""

    slot: int
    name: str
    param: str
    placeholder: str


@dataclass(frozen=True)
class Preset:
    """A traffic source as its documentation describes it.

    ``postback_url`` is empty when the source takes conversions another way (a conversion
    API) or when no postback is documented; ``evidence`` is the weakest part's
    (:data:`OFFICIAL`, :data:`THIRD_PARTY` or :data:`UNCONFIRMED`).
    """

    key: str
    name: str
    category: str
    external_id_param: str
    external_id_placeholder: str
    parameters: tuple[PresetParameter, ...]
    postback_url: str
    docs_url: str
    notes: str
    evidence: str = OFFICIAL
    postback_method: str = "GET"

    @property
    def to_replace(self) -> list[str]:
        """The ``REPLACE_WITH_...`` values in the postback URL, in order."""
        return list(dict.fromkeys(_REPLACE_RE.findall(self.postback_url)))

    @property
    def evidence_label(self) -> str:
        return EVIDENCE_LABELS[self.evidence]


def _params(*rows: tuple[str, str, str]) -> tuple[PresetParameter, ...]:
    """Parameters from ``(name, param, placeholder)`` rows, in slots 1, 2, 3..."""
    return tuple(PresetParameter(i, *row) for i, row in enumerate(rows, start=1))


def _same(placeholder: str, *names: str) -> list[tuple[str, str, str]]:
    """Rows whose name and parameter are the same, the placeholder written from the name
    (``"{%s}"`` gives ``{site}`` for site)."""
    return [(name, name, placeholder % name) for name in names]


_PRESETS: tuple[Preset, ...] = (
    # --- Native ---------------------------------------------------------------------------
    Preset(
        key="taboola",
        name="Taboola",
        category=NATIVE,
        external_id_param="click_id",
        external_id_placeholder="{click_id}",
        parameters=_params(
            *_same("{%s}", "site", "site_id", "campaign_id", "campaign_item_id", "platform")
        ),
        postback_url="https://trc.taboola.com/actions-handler/log/3/s2s-action"
        "?click-id={externalid}&name=REPLACE_WITH_EVENT_NAME&revenue={payout}"
        "&currency={payout_currency}",
        docs_url="https://developers.taboola.com/pixel/docs/the-postback-url",
        notes="Taboola needs the name of the conversion event as defined in Taboola Ads "
        "(case-sensitive) in name=; the click ID is long (66+ characters) and case-sensitive. "
        "The {click_id} macro comes from a tracker's documentation; the postback is Taboola's.",
        evidence=THIRD_PARTY,
    ),
    Preset(
        key="outbrain",
        name="Outbrain",
        category=NATIVE,
        external_id_param="OutbrainClickId",
        external_id_placeholder="{{ob_click_id}}",
        parameters=_params(
            *_same("{{%s}}", "publisher_name", "section_name", "section_id"),
            *_same("{{%s}}", "ad_title", "campaign_name"),
        ),
        postback_url="https://tr.outbrain.com/unifiedPixel?ob_click_id={externalid}"
        "&name=REPLACE_WITH_CONVERSION_NAME&orderValue={payout}&currency={payout_currency}",
        docs_url="https://www.outbrain.com/help/advertisers/server2server-integrations/",
        notes="Outbrain macros use double braces ({{ob_click_id}}). name= must be the conversion "
        "name configured in Outbrain. Endpoint and parameters come from a public integration "
        "(stape-io/outbrain-tag), not from Outbrain's own reference.",
        evidence=THIRD_PARTY,
    ),
    Preset(
        key="mgid",
        name="MGID",
        category=NATIVE,
        external_id_param="click_id",
        external_id_placeholder="{click_id}",
        parameters=_params(
            *_same(
                "{%s}", "widget_id", "teaser_id", "campaign_id", "category_id", "geo", "click_price"
            )
        ),
        postback_url="https://a.mgid.com/postback?c={externalid}&e=REPLACE_WITH_EVENT_NAME"
        "&r={payout}",
        docs_url="https://help.mgid.com/postback-setting-algorithm-in-mgid-dashboard/",
        notes="e= is the goal (event) name set in the MGID dashboard, Latin letters and digits. "
        "MGID takes no currency: r= is read in the account currency.",
    ),
    Preset(
        key="revcontent",
        name="RevContent",
        category=NATIVE,
        external_id_param="rc_uuid",
        external_id_placeholder="",
        parameters=(),
        postback_url="https://trends.revcontent.com/api/v1/conversion.php"
        "?api_key=REPLACE_WITH_API_KEY&rc_uuid={externalid}&amount={payout}",
        docs_url="https://github.com/stape-io/revcontent-tag",
        notes="RevContent puts its click ID in rc_uuid on the landing URL; the macro to write it "
        "into a tracker URL is not confirmed: enter it as the placeholder from your RevContent "
        "dashboard. api_key is the account's API key. Endpoint from a public integration.",
        evidence=UNCONFIRMED,
    ),
    # --- Push, pop and display ---------------------------------------------------------------
    Preset(
        key="propellerads",
        name="PropellerAds",
        category=PUSH_POP,
        external_id_param="subid",
        external_id_placeholder="${SUBID}",
        parameters=_params(("zoneid", "zoneid", "{zoneid}")),
        postback_url="http://ad.propellerads.com/conversion.php?aid=REPLACE_WITH_AID&pid="
        "&tid=REPLACE_WITH_TID&visitor_id={externalid}",
        docs_url="https://help.bemob.com/docs/postback-settings-of-a-traffic-source",
        notes="aid and tid are copied from the PropellerAds dashboard. The payout parameter is "
        "not confirmed (samples show payout= and price=), so none is sent. From trackers' "
        "documentation.",
        evidence=THIRD_PARTY,
    ),
    Preset(
        key="zeropark",
        name="Zeropark",
        category=PUSH_POP,
        external_id_param="cid",
        external_id_placeholder="",
        parameters=_params(("source", "source", "{source}")),
        postback_url="",
        docs_url="https://doc.zeropark.com/en/sources.html",
        notes="Only the {source} token is documented by Zeropark. Its click-ID macro ({cid} is "
        "common in trackers) and advertiser postback URL are not confirmed: take both from "
        "your Zeropark account, then add a postback rule with {externalid}.",
        evidence=UNCONFIRMED,
    ),
    Preset(
        key="exoclick",
        name="ExoClick",
        category=PUSH_POP,
        external_id_param="conversions_tracking",
        external_id_placeholder="{conversions_tracking}",
        parameters=(),
        postback_url="http://syndication.exoclick.com/tag.php?goal=REPLACE_WITH_GOAL_ID"
        "&tag={externalid}",
        docs_url="https://docs.exoclick.com/docs/conversion-tracking-api/",
        notes="goal is the goal ID created in the ExoClick panel (32 hex characters). ExoClick "
        "answers OK or an ERROR text. A dynamic value= is shown only by third parties.",
    ),
    Preset(
        key="trafficjunky",
        name="TrafficJunky",
        category=PUSH_POP,
        external_id_param="aclid",
        external_id_placeholder="{ACLID}",
        parameters=(),
        postback_url="",
        docs_url="https://github.com/moonshot-marketing/external-website-integration",
        notes="Captures the {ACLID} click ID (from a third-party integration). TrafficJunky's "
        "postback URL is not confirmed in its documentation: copy it from your TrafficJunky "
        "conversion tracker and add a postback rule with {externalid}.",
        evidence=UNCONFIRMED,
    ),
    Preset(
        key="trafficstars",
        name="TrafficStars",
        category=PUSH_POP,
        external_id_param="click_id",
        external_id_placeholder="{click_id}",
        parameters=_params(
            *_same(
                "{%s}", "site_id", "site_host", "campaign_id", "creative_id", "adspot_id", "format"
            ),
            ("cost", "cost", "{cost}"),
        ),
        postback_url="https://tsyndicate.com/api/v1/cpa/action?clickid={externalid}"
        "&value={payout}&key=REPLACE_WITH_KEY",
        docs_url="https://support.trafficstars.com/advertising/tracking/"
        "traffic-stars-s2s-tracking-api",
        notes='key is the account key from TrafficStars. A success answers {"ok":true}.',
    ),
    Preset(
        key="adsterra",
        name="Adsterra",
        category=PUSH_POP,
        external_id_param="click_id",
        external_id_placeholder="",
        parameters=(),
        postback_url="https://www.pbterra.com/name/REPLACE_WITH_ADVERTISER_NAME/at"
        "?subid_short={externalid}&atpay={payout}",
        docs_url="https://help-advertisers.adsterra.com/en/articles/"
        "4575914-how-do-i-setup-postback",
        notes="The path carries the Adsterra account's username. atpay is in USD: use it only "
        "with USD payouts (Adsterra documents another form for other currencies). The "
        "click-ID macro is not confirmed: take it from Adsterra's conversion tracking page.",
        evidence=UNCONFIRMED,
    ),
    Preset(
        key="clickadu",
        name="Clickadu",
        category=PUSH_POP,
        external_id_param="subid",
        external_id_placeholder="${SUBID}",
        parameters=_params(
            ("zoneid", "zoneid", "{zoneid}"),
            ("campaign", "campaignid", "{campaignid}"),
            ("cost", "cost", "{cost}"),
        ),
        postback_url="http://sconvtrk.com/conversion/REPLACE_WITH_ACCOUNT_TOKEN/"
        "?visitor_id={externalid}",
        docs_url="https://support.clickadu.com/hc/en-us/articles/"
        "360001757198-How-to-integrate-Clickadu-S2S-conversion-tracking-",
        notes="Copy the account token from the postback URL in Clickadu's Tracking tab. Macros "
        "are Clickadu's; the URL's form comes from a tracker's preset.",
        evidence=THIRD_PARTY,
    ),
    Preset(
        key="richads",
        name="RichAds (RichPush)",
        category=PUSH_POP,
        external_id_param="click_id",
        external_id_placeholder="[CLICK_ID]",
        parameters=_params(
            ("publisher_id", "publisher_id", "[PUBLISHER_ID]"),
            ("sub_list_id", "sub_list_id", "[SUB_LIST_ID]"),
            ("site_id", "site_id", "[SITE_ID]"),
            ("campaign_id", "campaign_id", "[CAMPAIGN_ID]"),
            ("creative_id", "creative_id", "[CREATIVE_ID]"),
            ("bid_price", "bid_price", "[BID_PRICE]"),
        ),
        postback_url="http://rtb.adx1.com/log?action=conversion&key={externalid}&price={payout}",
        docs_url="https://richads.com/blog/postback-access-to-all-richpush-features/",
        notes="price is in USD: use it only with USD payouts. Macros other than [CLICK_ID] "
        "come from a tracker's preset.",
    ),
    Preset(
        key="clickadilla",
        name="ClickAdilla",
        category=PUSH_POP,
        external_id_param="click_id",
        external_id_placeholder="[CLICK_ID]",
        parameters=_params(("campaign_id", "campaign_id", "[CAMPAIGN_ID]")),
        postback_url="https://tracking.clickadilla.com/in/postbacks/?token=REPLACE_WITH_TOKEN"
        "&campaign_id={var:campaign_id}&click_id={externalid}&payout={payout}",
        docs_url="https://clickadilla.com/help/advertisers/"
        "postback-url-and-conversion-tracking-in-statistics",
        notes="token is the account's, shown in the postback template of ClickAdilla's "
        "Conversion tracking page; the campaign ID is captured in var1 and sent back.",
    ),
    Preset(
        key="adxad",
        name="ADxAD",
        category=PUSH_POP,
        external_id_param="clickid",
        external_id_placeholder="{clickid}",
        parameters=(),
        postback_url="http://conv.adxadserv.com/?clickid={externalid}&payout={payout}&type=goal1",
        docs_url="https://adxad.com/en/conversions-import-service",
        notes="payout is in USD with a dot separator. type is goal1, goal2 or goal3: one rule "
        "per conversion type if you track several.",
    ),
    Preset(
        key="ezmob",
        name="EZmob",
        category=PUSH_POP,
        external_id_param="subid",
        external_id_placeholder="{subid}",
        parameters=_params(*_same("{%s}", "campaign", "banner", "source")),
        postback_url="https://xml.ezmob.com/conversion?c={externalid}&value={payout}",
        docs_url="https://helpdesk.ezmob.com/en/article/"
        "how-to-track-conversions-with-ezmobs-postback-4z7hva",
        notes="EZmob's macro list names {subid} the click ID while its postback article uses "
        "{conversion}: check which one your EZmob dashboard shows.",
    ),
    Preset(
        key="mondiad",
        name="Mondiad",
        category=PUSH_POP,
        external_id_param="clickid",
        external_id_placeholder="",
        parameters=(),
        postback_url="https://postback.mondiad.com/track?uid=REPLACE_WITH_ACCOUNT_UID"
        "&clickid={externalid}&payout={payout}",
        docs_url="https://docs.bemob.com/en/mondiad",
        notes="uid is the Mondiad account's. The click-ID macro is not confirmed: take it from "
        "your Mondiad account. The postback comes from a tracker's documentation.",
        evidence=UNCONFIRMED,
    ),
    # --- Search, social and video ----------------------------------------------------------
    Preset(
        key="yahoo",
        name="Yahoo DSP",
        category=SEARCH_SOCIAL,
        external_id_param="vmcid",
        external_id_placeholder="${CC}",
        parameters=(),
        postback_url="https://aaca.yahooinc.com/?id=REPLACE_WITH_EVENT_GUID&vmcid={externalid}"
        "&dp=REPLACE_WITH_DATA_PARTNER_ID&gv={payout}",
        docs_url="https://developer.yahooinc.com/dsp/api/docs/enhanced-attribution/"
        "conversion-tracking.html",
        notes="id is the event identifier and dp the data-partner ID from Yahoo; gv carries the "
        "value (Yahoo's example shows 10.0, its full definition is not given). Yahoo also has "
        "a Conversion API (OAuth2), not covered by this preset.",
    ),
    Preset(
        key="facebook",
        name="Facebook (Meta)",
        category=SEARCH_SOCIAL,
        external_id_param="fbclid",
        external_id_placeholder="",
        parameters=_params(
            ("campaign_id", "campaign_id", "{{campaign.id}}"),
            ("adset_id", "adset_id", "{{adset.id}}"),
            ("ad_id", "ad_id", "{{ad.id}}"),
            ("placement", "placement", "{{placement}}"),
            ("site_source_name", "site_source_name", "{{site_source_name}}"),
        ),
        postback_url="",
        docs_url="https://developers.facebook.com/docs/marketing-api/conversions-api/"
        "parameters/fbp-and-fbc",
        notes="Facebook takes conversions through its Conversions API "
        "(POST graph.facebook.com/<version>/<pixel id>/events with an access token), not S2S "
        "URLs: the preset only captures the click ID (fbclid, appended by Facebook) and Meta's "
        "URL parameters (Ads Manager's {{campaign.id}} etc.). No postback rule is created.",
    ),
    Preset(
        key="google_ads",
        name="Google Ads",
        category=SEARCH_SOCIAL,
        external_id_param="gclid",
        external_id_placeholder="{gclid}",
        parameters=_params(
            *_same("{%s}", "campaignid", "adgroupid", "creative", "keyword", "matchtype"),
            *_same("{%s}", "network", "device", "placement"),
        ),
        postback_url="",
        docs_url="https://support.google.com/google-ads/answer/6305348",
        notes="Google Ads takes conversions through its API (uploadClickConversions, OAuth2 "
        "and a developer token), not S2S URLs: the preset only captures the click ID (gclid) "
        "and ValueTrack parameters. gbraid/wbraid (iOS) are not captured. No postback rule is "
        "created.",
    ),
    Preset(
        key="microsoft_ads",
        name="Microsoft Ads (Bing)",
        category=SEARCH_SOCIAL,
        external_id_param="msclkid",
        external_id_placeholder="{msclkid}",
        parameters=_params(
            ("campaign_id", "campaign_id", "{CampaignId}"),
            ("adgroup_id", "adgroup_id", "{AdGroupId}"),
            ("ad_id", "ad_id", "{AdId}"),
            ("keyword", "keyword", "{keyword}"),
            ("matchtype", "matchtype", "{MatchType}"),
            ("network", "network", "{Network}"),
            ("device", "device", "{Device}"),
        ),
        postback_url="",
        docs_url="https://help.ads.microsoft.com/apex/index/3/en/56799",
        notes="Microsoft Advertising takes conversions through offline conversions "
        "(ApplyOfflineConversions) or the UET Conversions API, not S2S URLs: the preset only "
        "captures the click ID (msclkid) and URL parameters. No postback rule is created.",
    ),
    Preset(
        key="tiktok",
        name="TikTok",
        category=SEARCH_SOCIAL,
        external_id_param="ttclid",
        external_id_placeholder="__CLICKID__",
        parameters=_params(
            ("campaign_id", "campaign_id", "__CAMPAIGN_ID__"),
            ("adgroup_id", "adgroup_id", "__AID__"),
            ("ad_id", "ad_id", "__CID__"),
            ("placement", "placement", "__PLACEMENT__"),
        ),
        postback_url="",
        docs_url="https://ads.tiktok.com/help/article/tiktok-click-id",
        notes="TikTok takes conversions through its Events API (POST with an Access-Token "
        "header), not S2S URLs: the preset only captures the click ID (ttclid) and ad macros. "
        "No postback rule is created.",
    ),
    Preset(
        key="snapchat",
        name="Snapchat",
        category=SEARCH_SOCIAL,
        external_id_param="ScCid",
        external_id_placeholder="",
        parameters=(),
        postback_url="",
        docs_url="https://developers.snap.com/api/marketing-api/Conversions-API/Parameters",
        notes="Snapchat takes conversions through its Conversions API (sc_click_id in "
        "user_data), not S2S URLs: the preset only captures the click ID, which Snapchat "
        "appends as ScCid. No postback rule is created.",
    ),
)

PRESETS: dict[str, Preset] = {preset.key: preset for preset in _PRESETS}


def get(key: str) -> Preset:
    """The preset with this key; raises KeyError naming it when there is none."""
    try:
        return PRESETS[key]
    except KeyError:
        raise KeyError(f"No traffic-source preset {key!r}.") from None


def choices() -> list[tuple[str, str]]:
    """``(key, name)`` pairs sorted by name, for form fields."""
    return sorted(((p.key, p.name) for p in _PRESETS), key=lambda pair: pair[1].lower())


def _names(base: str, limit: int) -> Iterator[str]:
    """``base``, then ``base (2)``, ``base (3)``..., each cut to fit ``limit`` characters."""
    yield base[:limit]
    number = 2
    while True:
        suffix = f" ({number})"
        yield base[: limit - len(suffix)] + suffix
        number += 1


def _free_name(base: str) -> str:
    """The first of :func:`_names` no traffic source has."""
    limit = cast(int, TrafficSource._meta.get_field("name").max_length)  # a CharField's
    # Every candidate starts with the base cut to leave room for the longest suffix used.
    prefix = base[: limit - 10]
    taken = set(
        TrafficSource.objects.filter(name__startswith=prefix).values_list("name", flat=True)
    )
    return next(name for name in _names(base, limit) if name not in taken)


# Makes and saves the postback rule of a source created from a preset (postbacks.apps).
_rule_factory: Callable[[TrafficSource, Preset], PostbackRule] | None = None


def use_rule_factory(factory: Callable[[TrafficSource, Preset], PostbackRule]) -> None:
    """Set how :func:`source_from_preset` creates a preset's postback rule:
    ``factory(source, preset)`` saves and returns the rule (``postbacks.rules.rule_from_preset``
    in ``postbacks.apps``)."""
    global _rule_factory
    _rule_factory = factory


@transaction.atomic
def source_from_preset(
    key: str, *, name: str | None = None, create_rule: bool = True
) -> tuple[TrafficSource, PostbackRule | None]:
    """Create a traffic source from the preset ``key`` with its parameters and, when the
    preset has a postback URL and ``create_rule``, its postback rule.

    The source is named ``name`` (default: the preset's name), with `` (2)``, `` (3)``...
    appended when that name is taken. The rule, "<source name> postback", fires the preset's
    URL for approved conversions of this source only; it is created inactive while the URL
    still holds ``REPLACE_WITH_...`` values the manager must fill in, active otherwise.
    All or nothing. Raises KeyError for an unknown preset, RuntimeError when a rule is due
    and no factory was set (:func:`use_rule_factory`).
    """
    preset = get(key)
    base = (name or "").strip() or preset.name
    source = None
    for _ in range(5):  # another request may take the free name between check and insert
        try:
            with transaction.atomic():
                source = TrafficSource(
                    name=_free_name(base),
                    external_id_param=preset.external_id_param,
                    external_id_placeholder=preset.external_id_placeholder,
                    preset=preset.key,
                )
                source.full_clean(validate_unique=False)
                source.save(force_insert=True)
        except IntegrityError:
            source = None
            continue
        break
    if source is None:
        raise IntegrityError(f"No free traffic source name for {base!r}.")
    for parameter in preset.parameters:
        row = TrafficSourceParameter(
            traffic_source=source,
            slot=parameter.slot,
            name=parameter.name,
            param=parameter.param,
            placeholder=parameter.placeholder,
        )
        row.full_clean(validate_unique=False, validate_constraints=False)
        row.save(force_insert=True)
    if not (preset.postback_url and create_rule):
        return source, None
    if _rule_factory is None:
        raise RuntimeError("No preset rule factory: postbacks.apps sets it in ready().")
    rule = _rule_factory(source, preset)
    return source, rule
