"""The common rejection reasons, so a new install can choose them in rules at once."""

from django.db import migrations

REASONS = [
    ("fraud", "Fraud suspected"),
    ("duplicate", "Duplicate lead or sale"),
    ("invalid_geo", "Country not accepted by the offer"),
    ("invalid_traffic", "Traffic type or source not allowed"),
    ("invalid_data", "Invalid or incomplete lead data"),
    ("not_reached", "Could not reach the customer"),
    ("test", "Test conversion"),
    ("cap_reached", "Offer cap reached"),
    ("expired", "Click too old (outside the attribution window)"),
]


def add(apps, schema_editor):
    RejectionReason = apps.get_model("tracker", "RejectionReason")
    for code, label in REASONS:
        RejectionReason.objects.get_or_create(code=code, defaults={"label": label})


class Migration(migrations.Migration):
    dependencies = [("tracker", "0002_conversion_lifecycle")]
    operations = [migrations.RunPython(add, migrations.RunPython.noop)]
