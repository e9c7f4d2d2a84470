# Offer.currency: ISO 4217 checked through pycountry, besides the three-letter shape.

import django.core.validators
from django.db import migrations, models

import campaigns.models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0005_network_preset"),
    ]

    operations = [
        migrations.AlterField(
            model_name="offer",
            name="currency",
            field=models.CharField(
                default="USD",
                help_text="ISO 4217.",
                max_length=3,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. USD."
                    ),
                    campaigns.models.iso_currency_validator,
                ],
            ),
        ),
    ]
