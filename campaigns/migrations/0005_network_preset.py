from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_inbound_tracking"),
    ]

    operations = [
        migrations.AddField(
            model_name="affiliatenetwork",
            name="preset",
            field=models.CharField(
                blank=True,
                help_text="The affiliate-network preset whose macros fill this network's "
                "postback URL (campaigns/network_presets.py); empty: the URL shows "
                "REPLACE_WITH_... placeholders.",
                max_length=64,
            ),
        ),
    ]
