"""Traffic sources, affiliate networks, offers and campaigns: what a click is tracked against."""

from __future__ import annotations

import hmac
import ipaddress
import random
import re
from decimal import Decimal
from functools import lru_cache
from urllib.parse import quote, urlencode

import pycountry
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.http import QueryDict
from django.utils.crypto import get_random_string

from campaigns import network_presets

param_name_validator = RegexValidator(
    r"^[A-Za-z0-9_.\-]{1,64}$",
    "Use 1-64 letters, digits, '_', '.' or '-' (a URL query parameter name).",
)
currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. USD.")


def iso_currency_validator(value: str) -> None:
    """A three-letter shape is not enough (``XYZ`` passes it): the code must be an ISO 4217
    currency, per ``pycountry`` (as ``tracker.currency.is_known``, which imports this app)."""
    if value and len(value) == 3 and pycountry.currencies.get(alpha_3=value) is None:
        raise ValidationError(
            "%(value)s is not an ISO 4217 currency code (e.g. USD, EUR).",
            code="unknown_currency",
            params={"value": value},
        )


VAR_SLOTS = range(1, 11)
# Conversion statuses (tracker.models.Conversion.Status, which imports this module).
STATUS_VALUES = ("approved", "pending", "rejected", "refunded")
STATUS_ALIASES = {
    "chargeback": "refunded",
    "refund": "refunded",
    "reversed": "refunded",
    "declined": "rejected",
    "hold": "pending",
}


def status_from_text(sent: str, status_map: dict | None = None) -> str | None:
    """Our conversion status for a status value as a network sent it.

    ``status_map`` (the network's values -> ours, any case) first, then our own names in
    any case, then common aliases (``chargeback``, ``refund`` and ``reversed`` mean
    refunded, ``declined`` rejected, ``hold`` pending: Affise, Impact and TUNE spellings).
    Returns None when the value means nothing known.
    """
    value = sent.strip()
    mapped = {str(k).strip().lower(): v for k, v in (status_map or {}).items()}
    value = str(mapped.get(value.lower(), value)).strip().lower()
    value = STATUS_ALIASES.get(value, value)
    return value if value in STATUS_VALUES else None


def validate_template_url(value: str) -> None:
    """Accept an http(s) URL that may still contain ``{macro}`` placeholders after its host.

    Raises ValidationError when the scheme is not http or https, the host is missing, or
    the host part (with any user or port) holds a macro or a backslash: visitors are
    redirected to this URL, and a host filled from the click's parameters would send
    them anywhere (an open redirect).
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValidationError("Enter an http:// or https:// URL.")
    if not rest or rest[0] in "/?#":
        raise ValidationError("The URL has no host.")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if any(char in authority for char in "{}\\"):
        raise ValidationError("The host must be written out, not a macro.")


class TrafficSource(models.Model):
    """Where visitors come from (Taboola, Outbrain, MGID...); receives postbacks.

    The source sends its own click ID (the external ID) in the campaign URL under
    ``external_id_param``; var1..var10 come from :class:`TrafficSourceParameter` rows.
    """

    name = models.CharField(max_length=100, unique=True)
    external_id_param = models.CharField(
        "external ID parameter",
        max_length=64,
        default="external_id",
        validators=[param_name_validator],
        help_text="Query parameter of the campaign URL that carries the traffic source's own "
        "click ID (the external ID, available as {externalid} in postbacks).",
    )
    external_id_placeholder = models.CharField(
        "external ID placeholder",
        max_length=100,
        blank=True,
        help_text="The traffic source's macro that fills that parameter, e.g. {click_id} for "
        "Taboola or ${SUBID} for PropellerAds. Used to build campaign tracking URLs.",
    )
    preset = models.CharField(
        max_length=64,
        blank=True,
        help_text="The traffic-source preset this was created from (empty: set up by hand).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.external_id_param.lower() in {f"var{i}" for i in VAR_SLOTS}:
            raise ValidationError({"external_id_param": "var1..var10 are reserved names."})


class TrafficSourceParameter(models.Model):
    """One custom variable (var1..var10) read from the campaign URL at click time."""

    traffic_source = models.ForeignKey(
        TrafficSource, on_delete=models.CASCADE, related_name="parameters"
    )
    slot = models.PositiveSmallIntegerField(
        choices=[(i, f"var{i}") for i in VAR_SLOTS],
        help_text="Which click variable stores the value: {var1}..{var10} in postbacks.",
    )
    name = models.CharField(
        max_length=64,
        validators=[param_name_validator],
        help_text="Name for {var:name} in postbacks, e.g. site.",
    )
    param = models.CharField(
        "URL parameter",
        max_length=64,
        validators=[param_name_validator],
        help_text="Query parameter of the campaign URL, e.g. site.",
    )
    placeholder = models.CharField(
        max_length=100, blank=True, help_text="The traffic source's macro, e.g. {site}."
    )
    is_enabled = models.BooleanField("tracked", default=True)

    class Meta:
        ordering = ["traffic_source", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["traffic_source", "slot"], name="uniq_source_slot"),
            models.UniqueConstraint(fields=["traffic_source", "param"], name="uniq_source_param"),
        ]

    def __str__(self) -> str:
        return f"var{self.slot}={self.param}"


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=256)
def parse_ip_allowlist(text: str) -> tuple[IpNetwork, ...]:
    """The networks of an allowlist: IPs or CIDRs separated by commas, spaces or newlines.

    A bare IP is a /32 (IPv4) or /128 (IPv6) network; host bits of a CIDR are ignored
    (``10.0.0.1/8`` is ``10.0.0.0/8``). Raises ValueError naming the first bad entry.
    Cached: the same text is parsed once per process.
    """
    networks = []
    for entry in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network.") from None
    return tuple(networks)


def validate_ip_allowlist(value: str) -> None:
    """Model validator for :attr:`AffiliateNetwork.allowed_ips`."""
    try:
        parse_ip_allowlist(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def new_network_key() -> str:
    """A random key for a network's own postback URL ``/cv/<key>``."""
    return get_random_string(10, "abcdefghijklmnopqrstuvwxyz0123456789")


def new_postback_token() -> str:
    """A random security token: 32 letters and digits (about 190 bits)."""
    return get_random_string(32)


class AffiliateNetwork(models.Model):
    """Where offers come from; calls our ``/cv`` S2S postback URL with the click ID.

    ``/cv`` checks the network of the click's offer: when ``postback_token`` is set the
    request must carry it (query/body ``token`` or header ``X-Postback-Token``), and when
    ``allowed_ips`` is set the request must come from one of those addresses.
    """

    name = models.CharField(max_length=100, unique=True)
    key = models.SlugField(
        "postback URL key",
        max_length=32,
        unique=True,
        default=new_network_key,
        help_text="Names the network in its own postback URL /cv/&lt;key&gt;: its parameter "
        "mapping, status mapping and response apply before the click is looked up, and the "
        "inbound log shows the network even when the click ID is unknown. Changing it breaks "
        "the postback URL configured at the network.",
    )
    notes = models.TextField(blank=True)
    postback_token = models.CharField(
        "security token",
        max_length=128,
        blank=True,
        help_text="Optional shared secret. When set, conversion postbacks for this network's "
        "offers are accepted only with this value as the token parameter of the /cv URL "
        "(&amp;token=...) or as an X-Postback-Token header; others get 403 forbidden_token. "
        "Blank: no token is checked. Use a long random value (the list action "
        "'Generate a new security token' makes one); changing it breaks the postback URL "
        "configured at the network.",
    )
    allowed_ips = models.TextField(
        "allowed IPs",
        blank=True,
        validators=[validate_ip_allowlist],
        help_text="Optional: the network's server addresses, IPs or CIDR ranges separated by "
        "commas or new lines (e.g. 203.0.113.7, 198.51.100.0/24). When set, postbacks from "
        "other addresses get 403 forbidden_ip. Behind a proxy or load balancer set "
        "TRACKER_PROXY_COUNT, or every request appears to come from the proxy.",
    )
    status_map = models.JSONField(
        "status mapping",
        default=dict,
        blank=True,
        help_text="The network's status values and what they mean here, e.g. "
        '{"1": "approved", "0": "rejected", "2": "pending", "chargeback": "refunded"}. '
        "Values not listed are read as approved, pending, rejected or refunded (any case).",
    )
    param_map = models.JSONField(
        "parameter mapping",
        default=dict,
        blank=True,
        help_text="The network's parameter names for ours, e.g. "
        '{"status": "state", "rejection_reason": "reason", "txid": "transaction_id"}. '
        "Our names still work.",
    )
    response_body = models.CharField(
        "fixed response",
        max_length=500,
        blank=True,
        help_text="Optional text answered (as text/plain) to every postback this network sends "
        "that is accepted, a duplicate or a status change, e.g. success=true; for networks "
        "that check the answer. Blank: the JSON answer. Errors are always JSON with a 4xx.",
    )
    preset = models.CharField(
        max_length=64,
        blank=True,
        help_text="The affiliate-network preset whose macros fill this network's postback URL "
        "(campaigns/network_presets.py); empty: the URL shows REPLACE_WITH_... placeholders.",
    )
    accept_duplicates = models.BooleanField(
        "accept duplicate postbacks",
        default=False,
        help_text="Off (default): a repeat postback for the same click with no transaction ID "
        "and the same conversion type is a duplicate. On: every such postback is a new "
        "conversion (for networks that send repeat sales without a txid). A repeat of a "
        "transaction ID is always the same conversion.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not isinstance(self.status_map, dict) or not all(
            isinstance(v, str) and v.strip().lower() in STATUS_VALUES
            for v in self.status_map.values()
        ):
            errors["status_map"] = (
                "A JSON object whose values are approved, pending, rejected or refunded."
            )
        if not isinstance(self.param_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip()
            for k, v in self.param_map.items()
        ):
            errors["param_map"] = 'A JSON object of our name to theirs, e.g. {"txid": "tid"}.'
        if errors:
            raise ValidationError(errors)

    @property
    def network_preset(self) -> network_presets.NetworkPreset | None:
        """The preset named by ``preset``; None when blank or no longer known."""
        return network_presets.PRESETS.get(self.preset)

    def postback_url(self, base_url: str | None = None, *, show_token: bool = True) -> str:
        """The URL to paste into the network as its conversion postback:
        ``<base>/cv/<key>?click_id=<macro>&payout=<macro>&txid=<macro>&status=<macro>&currency=<macro>``
        (``base``: ``TRACKER_BASE_URL`` unless given).

        The values are the network's macros from its preset, verbatim (``#s2#``,
        ``{sub1}``, ``!!!clickRef!!!``: the network replaces them, so they are never
        percent-encoded); parameters the preset has no macro for are left out; without a
        preset every parameter shows a ``REPLACE_WITH_..._MACRO`` placeholder (see
        :func:`campaigns.network_presets.postback_params`). With a security token,
        ``&token=<token>`` ends the URL, or ``&token=***`` when not ``show_token`` (lists).
        """
        base = (base_url or settings.TRACKER_BASE_URL).rstrip("/")
        pairs = network_presets.postback_params(self.network_preset)
        if self.postback_token:
            pairs.append(("token", quote(self.postback_token, safe="") if show_token else "***"))
        query = "&".join(f"{name}={value}" for name, value in pairs)
        return f"{base}/cv/{self.key}?{query}"

    def status_for(self, sent: str) -> str | None:
        """Our status for the value the network sent; see :func:`status_from_text`."""
        return status_from_text(sent, self.status_map)

    def map_params(self, data: QueryDict) -> QueryDict:
        """``data`` with the network's parameter names (``param_map``, ours -> theirs) also
        under our names; a value sent under our own name wins."""
        if not self.param_map:
            return data
        mapped = data.copy()
        for ours, theirs in self.param_map.items():
            value = data.get(theirs)
            if not mapped.get(ours) and value:
                mapped[ours] = value
        return mapped

    def sent_as(self, data: QueryDict) -> dict[str, str]:
        """Our parameter names that :meth:`map_params` filled from ``data`` (the request as
        sent), with the network's name each came under: ``{"payout": "sum"}``."""
        return {
            ours: theirs
            for ours, theirs in (self.param_map or {}).items()
            if not data.get(ours) and data.get(theirs)
        }

    def token_matches(self, sent: str) -> bool:
        """Whether ``sent`` is the security token (constant-time); True when none is set."""
        if not self.postback_token:
            return True
        return hmac.compare_digest(
            sent.encode("utf-8", "replace"), self.postback_token.encode("utf-8", "replace")
        )

    def ip_allowed(self, ip: str | None) -> bool:
        """Whether a request from ``ip`` is allowed; True when no allowlist is set.

        ``ip``: the client address as text, or None when unknown (refused by an allowlist).
        """
        if not self.allowed_ips.strip():
            return True
        if ip is None:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in parse_ip_allowlist(self.allowed_ips))


class Offer(models.Model):
    """A landing destination paid per conversion."""

    class PayoutMode(models.TextChoices):
        AUTOMATIC = "auto", "Automatic (payout sent by the network)"
        MANUAL = "manual", "Manual (fixed payout below overrides the network's)"

    name = models.CharField(max_length=200)
    affiliate_network = models.ForeignKey(
        AffiliateNetwork, null=True, blank=True, on_delete=models.SET_NULL, related_name="offers"
    )
    url = models.CharField(
        "offer URL",
        max_length=2000,
        validators=[validate_template_url],
        help_text="Put {click_id} (or {cf_click_id}) in the parameter the network stores, e.g. "
        "https://offer.example/?s2={cf_click_id}. The network returns it in its postback.",
    )
    payout = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        default=Decimal("0"),
        help_text="Manual mode: the payout of every conversion. Automatic mode: used only when "
        "the network sends no payout.",
    )
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[currency_validator, iso_currency_validator],
        help_text="ISO 4217.",
    )
    payout_mode = models.CharField(
        max_length=10, choices=PayoutMode.choices, default=PayoutMode.AUTOMATIC
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if "{click_id}" not in self.url and "{cf_click_id}" not in self.url:
            raise ValidationError(
                {
                    "url": "Add {click_id} or {cf_click_id}: without it the network cannot "
                    "return the click ID and no conversion can be matched."
                }
            )


class Lander(models.Model):
    """A landing page shown before the offer ("pre-lander"). The click ID is passed on in its
    URL; its call-to-action links to ``/lp/click``, which sends the visitor on to the offer."""

    name = models.CharField(max_length=200)
    url = models.CharField(
        "lander URL",
        max_length=2000,
        validators=[validate_template_url],
        help_text="Put {click_id} where the page expects the click ID, e.g. "
        "https://lander.example/?cid={click_id}. The page's call-to-action links to "
        "TRACKER_BASE_URL/lp/click?click_id=... (or just /lp/click: the click-ID cookie is "
        "read when the parameter is missing).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if "{click_id}" not in self.url and "{cf_click_id}" not in self.url:
            raise ValidationError(
                {"url": "Add {click_id}: the lander must pass the click ID on to /lp/click."}
            )


def new_campaign_key() -> str:
    return get_random_string(12, "abcdefghijklmnopqrstuvwxyz0123456789")


class Campaign(models.Model):
    """A traffic source plus weighted offers; visitors enter through its tracking URL."""

    name = models.CharField(max_length=200)
    key = models.SlugField(
        "campaign key",
        max_length=32,
        unique=True,
        default=new_campaign_key,
        help_text="Appears in the tracking URL /c/&lt;key&gt;. Changing it breaks live links.",
    )
    traffic_source = models.ForeignKey(
        TrafficSource, on_delete=models.PROTECT, related_name="campaigns"
    )
    offers = models.ManyToManyField(Offer, through="CampaignOffer", related_name="campaigns")
    lander = models.ForeignKey(
        Lander,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="campaigns",
        help_text="Optional: visitors see this lander first, then go on to the offer.",
    )
    is_active = models.BooleanField(
        "active",
        default=True,
        help_text="Untick to pause: clicks are no longer recorded and visitors go to the "
        "fallback URL (or get 404 when there is none).",
    )
    fallback_url = models.URLField(
        "fallback URL",
        max_length=2000,
        blank=True,
        help_text="Where visitors go while the campaign is paused or has no active offer, "
        "e.g. your own site. Blank: 404 (paused) or 503 (no offer).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def tracking_url(self, base_url: str | None = None) -> str:
        """The URL to paste into the traffic source, with its placeholders left verbatim
        (``{x}``, ``${X}``, ``[X]``, ``{{x}}``, ``__X__``). A parameter without a placeholder
        is left out: the source adds it itself (Facebook's ``fbclid``)."""
        base = (base_url or settings.TRACKER_BASE_URL).rstrip("/")
        source = self.traffic_source
        pairs = [(source.external_id_param, source.external_id_placeholder or "")]
        pairs += [(p.param, p.placeholder) for p in source.parameters.all() if p.is_enabled]
        query = urlencode([(k, v) for k, v in pairs if v], safe="{}$_[]")
        return f"{base}/c/{self.key}?{query}"

    def choose_offer(self) -> Offer | None:
        """Pick one active offer at random, weighted; None when the campaign has none."""
        links = [link for link in self.campaign_offers.all() if link.offer.is_active]
        if not links:
            return None
        return random.choices([x.offer for x in links], weights=[x.weight for x in links])[0]


class CampaignOffer(models.Model):
    """An offer in a campaign's rotation, with its share of the traffic."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="campaign_offers")
    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="+")
    weight = models.PositiveSmallIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(10000)],
        help_text="Relative share of clicks, 1..10000.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "offer"], name="uniq_campaign_offer")
        ]

    def __str__(self) -> str:
        return f"{self.offer} ({self.weight})"
