"""The Streamlit demo app (``streamlit run app/main.py``); logic lives in plain modules here."""
