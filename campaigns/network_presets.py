"""Presets of real affiliate networks: the macros they fill into our conversion postback URL.

An affiliate network stores our click ID in a sub-ID parameter of the offer URL (CAKE's
``s2``, Affise's ``sub1``...) and, on a conversion, calls the postback URL we give it with
its own macros replaced: ``TRACKER_BASE_URL/cv/<network key>?click_id=#s2#&payout=#price#``.
A preset holds, per network, the macro for each of our parameters (``click_id``,
``payout``, ``txid``, ``status``, ``currency``), the status values it sends when they need
a mapping (Affise: 1, 2, 3, 5), the offer-URL parameter for our click ID and the page it
follows. :meth:`campaigns.models.AffiliateNetwork.postback_url` builds the URL from them.

Source: ``network_postbacks.md`` (the project's reference on network postbacks). Every macro
carries its evidence: the network's own documentation (:data:`OFFICIAL`) or a tracker's,
integration vendor's or macro site's (:data:`THIRD_PARTY`: verify before relying on it).
What that reference marks unconfirmed is left out, never guessed: a missing click-ID macro
shows as ``REPLACE_WITH_CLICK_ID_MACRO`` in the URL, other missing parameters are simply
not sent. Two deliberate omissions, explained in the presets' notes:

- a ``status`` macro whose values are not documented (Affise Reach, Offerrum): ``/cv``
  refuses a status it cannot read (400 ``invalid_status``), which would lose the
  conversion; add it with a status mapping once the values are known;
- a "transaction ID" that is the network's click or session ID (TUNE's and Everflow's
  ``{transaction_id}``): every conversion of the click would carry the same txid, so a
  second goal would be taken for a duplicate.

Networks left out: ClickBank, MaxBounty, CJ and Offer18 (no confirmed affiliate postback
macros in the reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Marks a value the manager must fill in: outside braces, so it is never read as a macro.
REPLACE_PREFIX = "REPLACE_WITH_"

OFFICIAL = "official"
THIRD_PARTY = "third-party"
UNCONFIRMED = "unconfirmed"
EVIDENCE_LABELS = {
    OFFICIAL: "the network's own documentation",
    THIRD_PARTY: "a tracker's, integration vendor's or macro site's documentation (verify "
    "before relying)",
    UNCONFIRMED: "partly unconfirmed (check the network's dashboard)",
}
_EVIDENCE_ORDER = (OFFICIAL, THIRD_PARTY, UNCONFIRMED)

# Our /cv parameters a network postback URL carries, in URL order.
POSTBACK_PARAMS = ("click_id", "payout", "txid", "status", "currency")
PLACEHOLDERS = {
    "click_id": f"{REPLACE_PREFIX}CLICK_ID_MACRO",
    "payout": f"{REPLACE_PREFIX}PAYOUT_MACRO",
    "txid": f"{REPLACE_PREFIX}TRANSACTION_ID_MACRO",
    "status": f"{REPLACE_PREFIX}STATUS_MACRO",
    "currency": f"{REPLACE_PREFIX}CURRENCY_MACRO",
}


@dataclass(frozen=True)
class NetworkMacro:
    """The network's macro (verbatim: ``#s2#``, ``{sub1}``, ``!!!clickRef!!!``,
    ``[=SID=]``) for one of our parameters, and how sure we are of it."""

    param: str
    macro: str
    evidence: str = OFFICIAL


@dataclass(frozen=True)
class NetworkPreset:
    """An affiliate network as its documentation describes its postbacks.

    ``offer_param``: the offer-URL parameter to put our ``{click_id}`` in ("" when not
    documented). ``status_map``: the network's status values -> ours, for the network's
    status mapping (empty when its values are our own words or not documented).
    """

    key: str
    name: str
    macros: tuple[NetworkMacro, ...]
    docs_url: str
    notes: str
    offer_param: str = ""
    status_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = {m.param for m in self.macros} - set(POSTBACK_PARAMS)
        if unknown:
            raise ValueError(f"{self.key}: not postback parameters: {sorted(unknown)}")
        object.__setattr__(self, "status_map", MappingProxyType(dict(self.status_map)))

    def macro(self, param: str) -> NetworkMacro | None:
        """The macro for our parameter ``param``; None when the preset has none."""
        return next((m for m in self.macros if m.param == param), None)

    @property
    def evidence(self) -> str:
        """The weakest evidence of its macros; unconfirmed without a click-ID macro."""
        if self.macro("click_id") is None:
            return UNCONFIRMED
        return max((m.evidence for m in self.macros), key=_EVIDENCE_ORDER.index)

    @property
    def evidence_label(self) -> str:
        return EVIDENCE_LABELS[self.evidence]

    @property
    def offer_url_example(self) -> str:
        """How the offer URL passes our click ID, e.g. ``https://offer.example/?s2={click_id}``;
        "" when the parameter is not documented."""
        if not self.offer_param:
            return ""
        return f"https://offer.example/?{self.offer_param}={{click_id}}"


def postback_params(preset: NetworkPreset | None) -> list[tuple[str, str]]:
    """``(our parameter, value)`` pairs of a network's postback URL query, in
    :data:`POSTBACK_PARAMS` order.

    With a preset: its macros, and ``REPLACE_WITH_CLICK_ID_MACRO`` when it has no click-ID
    macro (the click ID is the one parameter a postback cannot do without); parameters it
    has no macro for are left out. Without a preset: every parameter with its
    ``REPLACE_WITH_..._MACRO`` placeholder.
    """
    if preset is None:
        return [(param, PLACEHOLDERS[param]) for param in POSTBACK_PARAMS]
    pairs = []
    for param in POSTBACK_PARAMS:
        found = preset.macro(param)
        if found is not None:
            pairs.append((param, found.macro))
        elif param == "click_id":
            pairs.append((param, PLACEHOLDERS[param]))
    return pairs


def _m(param: str, macro: str, evidence: str = OFFICIAL) -> NetworkMacro:
    return NetworkMacro(param, macro, evidence)


_PRESETS: tuple[NetworkPreset, ...] = (
    NetworkPreset(
        key="cake",
        name="CAKE",
        offer_param="s2",
        macros=(_m("click_id", "#s2#"), _m("payout", "#price#"), _m("txid", "#leadid#")),
        docs_url="https://support.getcake.com/support/solutions/articles/5000545788",
        notes="Our click ID goes in s2 (s1..s5 work; use the matching #s1#..#s5#). s1 holds "
        "50 characters, s2..s5 100: our click ID has 36. #leadid# is CAKE's conversion ID; "
        "#tid# is the advertiser's transaction ID when the advertiser sends one. CAKE lists "
        "no status or currency token.",
    ),
    NetworkPreset(
        key="tune",
        name="HasOffers / TUNE",
        offer_param="aff_click_id",
        macros=(
            _m("click_id", "{aff_click_id}", THIRD_PARTY),
            _m("payout", "{payout}", THIRD_PARTY),
        ),
        docs_url="https://support.tune.com/hc/en-us/articles/1500005236722",
        notes="TUNE wants unique click IDs in aff_click_id (or aff_unique1..5), not aff_sub; "
        "use {aff_sub} if you pass it there. The macros come from a tracker's blog. TUNE's "
        "{transaction_id} is its session (click) ID, the same for every goal of a click: as "
        "txid it would make a second goal a duplicate, so it is not sent. The status macro "
        "is not confirmed (TUNE's values are approved, rejected, pending, which /cv reads).",
    ),
    NetworkPreset(
        key="everflow",
        name="Everflow",
        offer_param="sub1",
        macros=(_m("click_id", "{sub1}"), _m("payout", "{revenue}")),
        docs_url="https://helpdesk.everflow.io/en/articles/6173403",
        notes="Our click ID goes in sub1 (sub1..sub5 work; use the matching macro). The "
        "payout macro follows Everflow's affiliate API example (amount={revenue}); trackers "
        "cite {payout_amount} instead (third-party). {transaction_id} is Everflow's click ID, "
        "not a conversion's, so it is not sent as txid. Status and currency are not "
        "confirmed.",
    ),
    NetworkPreset(
        key="affise",
        name="Affise",
        offer_param="sub1",
        macros=(
            _m("click_id", "{sub1}"),
            _m("payout", "{sum}"),
            _m("txid", "{transactionid}"),
            _m("status", "{status}"),
            _m("currency", "{currency}"),
        ),
        status_map={"1": "approved", "2": "pending", "3": "rejected", "5": "pending"},
        docs_url="https://help-center.affise.com/en/articles/6483741-affiliate-postback-url-macros",
        notes="Affise has no click-ID macro for affiliate postbacks: our click ID goes through "
        "a sub parameter (sub1..sub8, 255 characters). Statuses are numbers: 1 approved, "
        "2 pending, 3 declined, 5 hold (approved, then put on hold), mapped to approved, "
        "pending, rejected and pending.",
    ),
    NetworkPreset(
        key="affise_reach",
        name="Affise Reach",
        macros=(
            _m("click_id", "{pub_click_id}"),
            _m("payout", "{sum}"),
            _m("txid", "{conversion_id}"),
            _m("currency", "{currency}"),
        ),
        docs_url="https://help-center.affisereach.com/en/articles/6127765-postback-macros",
        notes="{pub_click_id} is the click ID in your external system (ours); the offer-URL "
        "parameter that carries it is not confirmed. Reach has a {status} macro but its "
        "values are not documented: add &status={status} with a status mapping once you know "
        "them (/cv refuses a status it cannot read).",
    ),
    NetworkPreset(
        key="impact",
        name="Impact (impact.com)",
        offer_param="subId1",
        macros=(
            _m("click_id", "{SubId1}", THIRD_PARTY),
            _m("payout", "{Payout}", THIRD_PARTY),
            _m("txid", "{ActionId}", THIRD_PARTY),
            _m("status", "{Status}", THIRD_PARTY),
            _m("currency", "{Currency}", THIRD_PARTY),
        ),
        docs_url="https://integrations.impact.com/impact-brand/reference/enable-postbacks",
        notes="Event Notification postbacks, GET recommended. Macros are case-sensitive "
        "({subid1} does not work) and come from mrpostback.com and affpixel.com; one source "
        "writes the status as {ActionStatus}. Status values pending, approved and reversed "
        "are read as they are (reversed = refunded).",
    ),
    NetworkPreset(
        key="awin",
        name="Awin",
        offer_param="clickref",
        macros=(_m("click_id", "!!!clickRef!!!"), _m("payout", "!!!commission!!!")),
        docs_url="https://developer.awin.com/docs/request-types",
        notes="Publisher Transaction Notifications are enabled on request (Toolbox > "
        "Transaction Notifications), port 80 or 443. Placeholders are case-sensitive; "
        "clickref2..clickref6 also exist. The transaction ID, status and currency "
        "placeholders are not confirmed.",
    ),
    NetworkPreset(
        key="scaleo",
        name="Scaleo",
        offer_param="aff_click_id",
        macros=(_m("click_id", "{aff_click_id}"),),
        docs_url="https://help.scaleo.io/article/384-affiliate-parameters",
        notes="Only the click-ID macro is confirmed; payout, transaction, status and currency "
        "macros are not.",
    ),
    NetworkPreset(
        key="trackier",
        name="Trackier",
        offer_param="p1",
        macros=(_m("click_id", "{p1}"), _m("payout", "{payout}"), _m("txid", "{txn_id}")),
        docs_url="https://help.trackier.com/support/solutions/articles/31000154963-publisher-"
        "tracking-link-macro-and-postback-parameter-",
        notes="{payout_usd} gives the payout in USD. {txn_id} is the advertiser's transaction "
        "ID. Status and currency macros are not confirmed for publisher postbacks.",
    ),
    NetworkPreset(
        key="linktrust",
        name="LinkTrust",
        offer_param="SID",
        macros=(
            _m("click_id", "[=SID=]"),
            _m("payout", "[=AffiliateCommission=]"),
            _m("txid", "[=_TransID=]"),
        ),
        docs_url="https://help.linktrust.com/knowledge/optional-code-tokens",
        notes="Status and currency tokens are not confirmed.",
    ),
    NetworkPreset(
        key="kuala",
        name="Kuala",
        macros=(_m("click_id", "{tid}"), _m("payout", "{payout}"), _m("txid", "{xid}")),
        docs_url="https://kuala.com/support/affiliate-postback-tracking",
        notes="{tid} identifies the original click; if you pass our click ID in a sub ID "
        "instead, use {subid1}..{subid6}. {xid} distinguishes multiple conversions. The "
        "receiver must answer 200 (any accepted /cv answer is 200).",
    ),
    NetworkPreset(
        key="indoleads",
        name="Indoleads",
        macros=(
            _m("click_id", "{p1}"),
            _m("payout", "{payout}"),
            _m("txid", "{conversion_id}"),
            _m("currency", "{currency}"),
        ),
        docs_url="https://indoleads.atlassian.net/wiki/pages/diffpages.action?originalId="
        "338755611&pageId=439091204",
        notes="Our click ID goes in a custom sub ID, returned by {p1}..{p4}; {click_id} is "
        "Indoleads' own click ID. The offer-URL parameter is not stated.",
    ),
    NetworkPreset(
        key="traffic_company",
        name="Traffic Company",
        macros=(
            _m("click_id", "{click_id}", THIRD_PARTY),
            _m("payout", "{reward}", THIRD_PARTY),
            _m("txid", "{unique_id}", THIRD_PARTY),
        ),
        docs_url="https://kintura.com/docs/presets/pairings/",
        notes="From a tracker's preset (Kintura). The offer-URL parameter is not stated.",
    ),
    NetworkPreset(
        key="terra_leads",
        name="Terra Leads",
        macros=(_m("click_id", "{sub_id}", THIRD_PARTY), _m("payout", "{payment}", THIRD_PARTY)),
        docs_url="https://kintura.com/docs/presets/pairings/",
        notes="From a tracker's preset (Kintura). The offer-URL parameter is not stated.",
    ),
    NetworkPreset(
        key="clickbooth",
        name="Clickbooth",
        offer_param="subid2",
        macros=(_m("txid", "{transid}", THIRD_PARTY),),
        docs_url="https://kintura.com/docs/presets/pairings/clickadu/clickbooth",
        notes="Our click ID goes in subid2, but the macro that returns it is not confirmed: "
        "replace REPLACE_WITH_CLICK_ID_MACRO with it from your Clickbooth account.",
    ),
    NetworkPreset(
        key="zeydoo",
        name="Zeydoo",
        offer_param="ymid",
        macros=(_m("payout", "{amount}"),),
        docs_url="https://help.zeydoo.com/",
        notes="Our click ID goes in ymid and Zeydoo returns that value (help.zeydoo.com, "
        "article 4362736); the macro's exact spelling is not in our reference: replace "
        "REPLACE_WITH_CLICK_ID_MACRO with it from your Zeydoo account.",
    ),
    NetworkPreset(
        key="offerrum",
        name="Offerrum",
        macros=(
            _m("click_id", "{subid1}", THIRD_PARTY),
            _m("payout", "{summ_approved}", THIRD_PARTY),
            _m("txid", "{lead_id}", THIRD_PARTY),
        ),
        docs_url="https://docs.bemob.com/en/offerrum-settings",
        notes="From a tracker's documentation (BeMob). Offerrum has a {status} macro whose "
        "values are not documented: add &status={status} with a status mapping once you know "
        "them (/cv refuses a status it cannot read).",
    ),
    NetworkPreset(
        key="monetizer",
        name="Monetizer",
        macros=(
            _m("click_id", "{clickID}", THIRD_PARTY),
            _m("payout", "{amount}", THIRD_PARTY),
            _m("txid", "{transactionID}", THIRD_PARTY),
        ),
        docs_url="https://docs.bemob.com/en/monetizer-settings",
        notes="From a tracker's documentation (BeMob). The offer-URL parameter is not stated.",
    ),
)

PRESETS: dict[str, NetworkPreset] = {preset.key: preset for preset in _PRESETS}


def get(key: str) -> NetworkPreset:
    """The preset with this key; raises KeyError naming it when there is none."""
    try:
        return PRESETS[key]
    except KeyError:
        raise KeyError(f"No affiliate-network preset {key!r}.") from None


def choices() -> list[tuple[str, str]]:
    """``(key, name)`` pairs sorted by name, for form fields."""
    return sorted(((p.key, p.name) for p in _PRESETS), key=lambda pair: pair[1].lower())
