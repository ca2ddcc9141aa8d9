"""Registers the user page; layout and callbacks live in :mod:`dash_app.views.user`."""

import dash
from dash import callback

from dash_app.views import user as v

# Dash passes the rest of the browser's pathname, still percent-encoded and ``/``
# included, as ``user_path``; the view decodes it once (see dash_app.encode.user_href).
dash.register_page(__name__, path_template="/users/<user_path>", name="User", order=2)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
