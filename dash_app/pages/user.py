"""Registers the user page; layout and callbacks live in :mod:`dash_app.views.user`."""

import dash
from dash import callback

from dash_app.views import user as v

dash.register_page(__name__, path_template="/users/<user_id>", name="User", order=2)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
