"""The survey page's own words, per locale (question wording lives in the question sets)."""

TEXTS = {
    "en": {
        "page_title": "Your feedback",
        "intro": "A few short questions. It takes about 2 minutes.",
        "optional": "optional",
        "submit": "Send my answers",
        "required": "Please choose an answer.",
        "required_text": "Please write an answer.",
        "invalid": "Please check this answer.",
        "too_long": "Please keep your answer under {n} characters.",
        "error_summary": "Please check your answers",
        "thanks_title": "Thank you",
        "thanks_body": "Your answers have been received. They help our teams improve care for every patient.",
        "unavailable_title": "This survey link is no longer available",
        "unavailable_body": "It may have been used already, or it may have expired. Thank you for taking "
                            "the time: there is nothing else you need to do.",
        "busy_title": "Please try again in a minute",
        "busy_body": "We cannot open this page right now. Nothing you entered has been lost: please go back "
                     "and try again in a minute.",
        "stop_link": "I don't want to receive surveys",
        "stop_title": "Stop receiving surveys?",
        "stop_body": "We will not send you any more feedback surveys on this channel.",
        "stop_confirm": "Yes, stop sending me surveys",
        "stopped_title": "You will not receive more surveys",
        "stopped_body": "We have recorded your choice. Thank you for letting us know.",
        "session_expired": "This page was open for a long time. For your security, please press Send again.",
    },
    "es": {
        "page_title": "Su opinión",
        "intro": "Unas pocas preguntas breves. Toma unos 2 minutos.",
        "optional": "opcional",
        "submit": "Enviar mis respuestas",
        "required": "Por favor, elija una respuesta.",
        "required_text": "Por favor, escriba una respuesta.",
        "invalid": "Por favor, revise esta respuesta.",
        "too_long": "Por favor, escriba menos de {n} caracteres.",
        "error_summary": "Por favor, revise sus respuestas",
        "thanks_title": "Gracias",
        "thanks_body": "Hemos recibido sus respuestas. Ayudan a nuestros equipos a mejorar la atención de todos "
                       "los pacientes.",
        "unavailable_title": "Este enlace de encuesta ya no está disponible",
        "unavailable_body": "Es posible que ya se haya usado o que haya vencido. Gracias por su tiempo: no "
                            "necesita hacer nada más.",
        "busy_title": "Inténtelo de nuevo en un minuto",
        "busy_body": "No podemos abrir esta página en este momento. No se ha perdido nada de lo que escribió: "
                     "vuelva atrás e inténtelo de nuevo en un minuto.",
        "stop_link": "No quiero recibir encuestas",
        "stop_title": "¿Dejar de recibir encuestas?",
        "stop_body": "No le enviaremos más encuestas de opinión por este medio.",
        "stop_confirm": "Sí, no quiero recibir más encuestas",
        "stopped_title": "No recibirá más encuestas",
        "stopped_body": "Hemos registrado su decisión. Gracias por avisarnos.",
        "session_expired": "Esta página estuvo abierta mucho tiempo. Por seguridad, pulse Enviar de nuevo.",
    },
}


def texts_for(locale: str | None) -> dict:
    return TEXTS.get((locale or "en").split("-")[0], TEXTS["en"])
