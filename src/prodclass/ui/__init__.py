"""The web app (Streamlit) for catalogue teams. It talks to the prediction API over HTTP and
never loads a model itself, so it deploys unchanged next to any API (Streamlit Community Cloud
included: set ``PRODCLASS_API_URL`` in the app's secrets)."""
