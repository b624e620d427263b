"""A Streamlit chat app (`streamlit run streamlit_chat.py`), for test_streamlit_traces.py: the
history is re-rendered on each run and the answer to the chat input is streamed word by word."""

import streamlit as st

st.title("Refund desk")
if "history" not in st.session_state:
    st.session_state.history = []
for role, text in st.session_state.history:
    st.chat_message(role).write(text)
if prompt := st.chat_input("Ask the refund desk"):
    st.chat_message("user").write(prompt)
    answer = f"About {prompt}: refunds take 5 days."
    st.chat_message("assistant").write_stream(word + " " for word in answer.split(" "))
    st.session_state.history += [("user", prompt), ("assistant", answer)]
