"""A Streamlit page that answers one input with two versions of the playground's system prompt,
side by side, from the same model (MODEL, default `tiny`), through `openai.OpenAI()` as Loom
configures it. The versions are PROMPT_A and PROMPT_B ("@alias" or "/N"; default /1 and /2)."""
import os

import streamlit as st
from openai import OpenAI

from prompts import load_system_prompt

MODEL = os.environ.get("MODEL", "tiny")
client = OpenAI()

st.title("Prompt versions, side by side")
question = st.text_input("Your input", key="question")
if question:
    for column, ref in zip(st.columns(2), (os.environ.get("PROMPT_A", "/1"), os.environ.get("PROMPT_B", "/2"))):
        system, source = load_system_prompt(ref)
        with column:
            st.caption(f"{source}: {system}")  # what differs between the columns
            answer = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                max_tokens=48,
                temperature=0,  # the same input gives the same answer: only the prompt differs
            )
            st.markdown(f"**Answer** to _{question}_")
            # Wrapped: a long answer is read whole, never cut at the column's edge.
            st.code(answer.choices[0].message.content or "", language=None, wrap_lines=True)
else:
    st.write("Type an input above to compare the two prompt versions.")
